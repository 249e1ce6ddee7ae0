"""Evaluation tools: synthetic songs with known word timings, and the metrics to score results."""
