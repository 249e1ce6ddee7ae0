"""bench/eta.py: the replay is deterministic and the ETA meets its targets on the mixed sequence."""

from __future__ import annotations

import pytest

from bench import eta


def test_the_eta_benchmark_meets_its_targets_and_repeats_exactly() -> None:
    first = eta.run(eta.make_jobs(), eta.StoreHistory())
    again = eta.run(eta.make_jobs(), eta.StoreHistory())
    assert first.errors == again.errors
    assert len(first.errors[0.1]) == eta.JOBS
    for share in eta.POINTS:
        assert first.median(share) <= eta.TARGET_MEDIAN_ERROR[share], (share, first.median(share))
    # The pathological job is in the mix and is the hardest at half-way.
    assert "instrumental clip" in first.worst(0.5)[1]


def test_the_benchmark_prints_its_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert eta.main(["--jobs", "40"]) == 0
    out = capsys.readouterr().out
    assert "| orchestrator.progress |" in out and "targets" in out and ": met" in out
