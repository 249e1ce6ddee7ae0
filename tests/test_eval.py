"""The evaluation harness: end to end on one committed song with the real weights (the harness starts
`roar up` itself), and its scoring and output helpers on numbers worked out by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bench import eval as harness
from tests.conftest import shared_path

SONGS = Path(__file__).resolve().parent / "data" / "songs"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.shared
def test_harness_scores_a_song_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    separation = shared_path("models", "spleeter-2stems")
    transcription = shared_path("models", "whisper-tiny.en")
    out = tmp_path / "results"
    harness.main(
        [
            str(SONGS),
            "--songs",
            "1",
            "--out",
            str(out),
            "--separation-model",
            str(separation),
            "--transcription-model",
            str(transcription),
        ]
    )
    document = json.loads((out / "eval.json").read_text())
    assert [row["song"] for row in document["songs"]] == ["song_000"]
    naive_keys = [k for k in harness.METRIC_KEYS if not k.startswith("lyrics_")]
    for metrics in (document["all"], document["songs"][0]["metrics"]):
        assert set(metrics) == set(harness.SYSTEMS)
        # Every metric is a finite number; the naive systems take no lyrics, so have no lyrics metrics.
        for system, expected in (
            ("pipeline", harness.METRIC_KEYS),
            ("naive", naive_keys),
            ("mixture", naive_keys),
        ):
            values = metrics[system]
            assert all(isinstance(values[k], float) and math.isfinite(values[k]) for k in expected), values
            assert all(values[k] is None for k in set(harness.METRIC_KEYS) - set(expected)), values
    pipeline = document["all"]["pipeline"]
    assert isinstance(pipeline["lyrics_onset_median"], float)
    # The pipeline's stems are separations, not the mixture passed through.
    assert pipeline["vocals_sdr"] > document["all"]["mixture"]["vocals_sdr"] + 3.0
    assert set(document["targets"]) == set(harness.TARGETS)

    table = (out / "eval.md").read_text()
    for metric in harness.METRICS:
        assert f"| {metric.label} |" in table
    assert table in capsys.readouterr().out
    assert (out / "eval.png").read_bytes().startswith(PNG_SIGNATURE)


def test_word_scores_pool_over_songs() -> None:
    truth = {"words": [{"word": w, "start": float(i)} for i, w in enumerate(["the", "sun", "will", "rise"])]}
    heard = [
        {"word": "The", "start": 0.05},  # 50 ms late
        {"word": "son", "start": 1.0},  # misheard: an edit, no onset
        {"word": "will", "start": 2.5},  # 500 ms late
        {"word": "rise.", "start": None},  # not timed: counts for WER, not for onsets
    ]
    score = harness.score_words(truth, heard)
    assert score.edits == 1 and score.truth_words == 4
    assert score.onset_errors == pytest.approx((0.05, 0.5))

    exact = harness.score_words(truth, [{"word": w["word"], "start": w["start"]} for w in truth["words"]])
    pooled = harness.word_metrics([score, exact])
    assert pooled["wer"] == pytest.approx(1 / 8)
    assert pooled["matched"] == pytest.approx(6 / 8)
    assert pooled["within_0_2"] == pytest.approx(5 / 8)  # unmatched words are misses
    assert pooled["onset_median"] == pytest.approx(0.0)
    assert pooled["onset_mean"] == pytest.approx(0.55 / 6)


def test_stem_score_brings_the_estimate_to_the_reference_rate_and_channels() -> None:
    t = np.arange(44100) / 44100
    reference = np.stack([np.sin(2 * np.pi * 220 * t)] * 2).astype(np.float32)
    mono_at_22k = reference[:1, ::2]
    assert harness.score_stem(reference, 44100, mono_at_22k, 22050) > 30.0
    assert harness.score_stem(reference, 44100, -reference, 44100) < -5.0


def _document(lyrics_median: float) -> dict:
    def values(**known: float) -> dict[str, float]:
        return {**dict.fromkeys(harness.METRIC_KEYS, math.nan), **known}

    overall = {
        "pipeline": values(
            vocals_sdr=5.0, wer=0.3, lyrics_onset_median=lyrics_median, lyrics_within_0_2=0.95
        ),
        "naive": values(vocals_sdr=5.005, wer=0.5),
        "mixture": values(vocals_sdr=-7.0, wer=0.2),
    }
    return {
        "songs": [{"song": "a", "seconds": 3.0, "words": 4, "metrics": overall}],
        "all": overall,
        "targets": {
            key: {"target": text, "met": met(overall["pipeline"][key], overall)}
            for key, (text, met) in harness.TARGETS.items()
        },
        "run": {
            "dataset": "d",
            "separation_model": "s",
            "transcription_model": "t",
            "wall_seconds": 1.0,
            "pipeline_seconds": 1.0,
            "naive_seconds": 1.0,
            "threads": 1,
        },
    }


def test_targets_and_table_formatting() -> None:
    document = _document(lyrics_median=0.082)
    met = {key: target["met"] for key, target in document["targets"].items()}
    # 0.005 dB under naive is within the tolerance for WAV rounding; 82 ms misses 80 ms.
    assert met == {"vocals_sdr": True, "wer": True, "lyrics_onset_median": False, "lyrics_within_0_2": True}
    table = harness.summary_table(document)
    lines = table.splitlines()
    assert len(lines) == 2 + len(harness.METRICS)
    assert len({line.count("|") for line in lines}) == 1, "ragged table"
    assert "| WER, no lyrics (%) | 30.0 | 50.0 | 20.0 | ≤ 35 % | yes |" in lines
    assert "| onset error median, with lyrics (ms) | 82 | — | — | ≤ 80 ms | no |" in lines


def _reject(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


def test_results_are_written_with_nan_as_null(tmp_path: Path) -> None:
    markdown = harness.write_results(_document(lyrics_median=0.07), tmp_path)
    document = json.loads((tmp_path / "eval.json").read_text(), parse_constant=_reject)
    assert document["all"]["naive"]["lyrics_wer"] is None
    assert document["all"]["pipeline"]["vocals_sdr"] == 5.0
    assert (tmp_path / "eval.md").read_text() == markdown
    png = (tmp_path / "eval.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 10_000
