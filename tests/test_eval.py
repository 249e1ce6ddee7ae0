"""The evaluation harness: end to end on one committed song with the real weights (the harness starts
`roar up` itself) under its three lyrics conditions, and its scoring, worst-song and output helpers on
numbers worked out by hand."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from bench import eval as harness
from tests.conftest import shared_path

SONGS = Path(__file__).resolve().parent / "data" / "songs"
UNSUNG = "the ocean hums a quiet tune"


def _with_wrong_lyrics(song_dir: Path, out_dir: Path) -> Path:
    """A copy of a committed song with wrong lyrics: an unsung line in the middle, the last line out."""
    shutil.copytree(song_dir, out_dir)
    truth = json.loads((out_dir / "truth.json").read_text())
    lines = truth["lyrics"].splitlines()
    (out_dir / "lyrics_wrong.txt").write_text("\n".join([lines[0], UNSUNG, *lines[1:-1]]) + "\n")
    last = len(lines) - 1
    first_absent = sum(len(line.split()) for line in lines[:-1])
    truth.update(
        unsung_lines=[UNSUNG],
        absent_lines=[last],
        absent_words=list(range(first_absent, len(truth["words"]))),
    )
    (out_dir / "truth.json").write_text(json.dumps(truth))
    return out_dir


@pytest.mark.shared
def test_harness_scores_a_song_under_three_conditions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    separation = shared_path("models", "spleeter-2stems")
    transcription = shared_path("models", "whisper-tiny.en")
    _with_wrong_lyrics(SONGS / "song_000", tmp_path / "songs" / "song_000")
    out = tmp_path / "results"
    harness.main(
        [
            str(tmp_path / "songs"),
            "--out",
            str(out),
            "--separation-model",
            str(separation),
            "--transcription-model",
            str(transcription),
            "--threads",
            "1",
        ]
    )
    document = json.loads((out / "eval.json").read_text())
    [row] = document["songs"]
    assert row["song"] == "song_000" and row["errors"] == {}
    assert set(row["conditions"]) == set(harness.CONDITIONS)
    for condition, keys in harness.CONDITION_METRICS.items():
        values = row["conditions"][condition]
        assert set(values) == set(keys)
        assert all(isinstance(values[k], float) and math.isfinite(values[k]) for k in keys), values
        # one song: it is the worst of every metric, and the mean is its value
        for key in keys:
            figures = document["summary"][condition][key]
            assert figures["worst_song"] == "song_000" and figures["mean"] == figures["worst"] == values[key]
    # forced alignment of the exact lyrics of a clean, loud song lands most words
    assert row["conditions"]["exact"]["within_0_2"] >= 0.7
    assert row["conditions"]["exact"]["wer"] == 0.0
    assert row["stems"]["vocals_sdr"] > 5.0
    wrong = row["conditions"]["wrong"]
    assert wrong["unsung_reported"] in (0.0, 1.0)
    judged = {(t["condition"], t["metric"]): t for t in document["targets"]}
    assert judged["wrong", "unsung_reported"]["met"] == (wrong["unsung_reported"] == 1.0)
    assert judged["none", "wer"]["value"] == row["conditions"]["none"]["wer"]

    table = (out / "eval.md").read_text()
    assert "| metric | no lyrics | exact lyrics | wrong lyrics |" in table
    for target in harness.TARGETS:
        assert f"| {target.text} |" in table
    assert table in capsys.readouterr().out


def test_conditions_score_sung_words_and_the_unsung_line() -> None:
    truth = {
        "words": [
            {"word": w, "start": float(i)} for i, w in enumerate(["the", "sun", "will", "rise", "again"])
        ],
        "unsung_lines": ["over the hill"],
    }
    words = [
        {"word": "The", "start": 0.05, "sung": True},  # 50 ms late
        {"word": "sun", "start": 1.25, "sung": True},  # 250 ms late
        {"word": "over", "start": None, "end": None, "sung": False},  # the unsung line, reported
        {"word": "the", "start": None, "end": None, "sung": False},
        {"word": "hill", "start": None, "end": None, "sung": False},
        {"word": "will", "start": 2.9, "sung": True},  # 900 ms late
        {"word": "rise", "start": 3.0, "sung": True, "source": "transcript"},
    ]  # "again" is not placed
    lines = [
        {"text": "the sun", "start": 0.05, "end": 1.5, "words": [0, 1], "sung": True},
        {"text": "over the hill", "start": None, "end": None, "words": [2, 3, 4], "sung": False},
        {"text": "will rise", "start": 2.9, "end": 3.4, "words": [5, 6], "sung": True},
    ]
    wrong = harness.score_condition(truth, words, lines, "wrong")
    assert wrong == pytest.approx(
        {
            "wer": 1 / 5,  # "again" deleted; the unsung words are not counted as heard
            "emitted_ratio": 4 / 5,
            "onset_median": 0.15,
            "within_0_2": 2 / 5,
            "within_0_3": 3 / 5,
            "unsung_reported": 1.0,
            "falsely_unsung": 0.0,
        }
    )
    # today's outputs have no "sung" key: every word is placed or not by its start alone, and the
    # unsung line is not reported
    today = [{k: v for k, v in w.items() if k != "sung"} for w in words]
    plain_lines = [{k: v for k, v in line.items() if k != "sung"} for line in lines]
    assert harness.score_condition(truth, today, plain_lines, "wrong")["unsung_reported"] == 0.0
    # with no lyrics, only the word metrics count
    assert set(harness.score_condition(truth, words, lines, "none")) == set(harness.CONDITION_METRICS["none"])


def _row(song: str, none: dict, exact: dict, wrong: dict | None = None, vocals_sdr: float = 5.0) -> dict:
    conditions = {"none": none, "exact": exact}
    if wrong is not None:
        conditions["wrong"] = wrong
    return {
        "song": song,
        "seconds": 60.0,
        "words": 40,
        "style": {"voice": "en", "level_db": -5.0, "low": True},
        "markup": False,
        "stems": {"vocals_sdr": vocals_sdr, "instrumental_sdr": 9.0},
        "conditions": conditions,
        "errors": {},
    }


def _rows() -> list[dict]:
    exact = {"wer": 0.0, "emitted_ratio": 1.0, "within_0_3": 1.0, "falsely_unsung": 0.0}
    return [
        _row(
            "a",
            {"wer": 0.2, "emitted_ratio": 1.0, "onset_median": 0.1, "within_0_2": 0.6, "within_0_3": 0.7},
            {**exact, "onset_median": 0.03, "within_0_2": 0.95},
            {**exact, "onset_median": 0.05, "within_0_2": 0.9, "within_0_3": 0.85, "unsung_reported": 1.0},
        ),
        _row(
            "b",
            {"wer": 0.6, "emitted_ratio": 1.5, "onset_median": 0.2, "within_0_2": 0.3, "within_0_3": 0.4},
            {**exact, "onset_median": 0.07, "within_0_2": 0.85},
            {**exact, "onset_median": 2.0, "within_0_2": 0.2, "within_0_3": 0.3, "unsung_reported": 0.0},
            vocals_sdr=2.0,
        ),
        # nothing matched with exact lyrics (a failed job): no median, the worst of all; no wrong lyrics
        _row(
            "c",
            {"wer": 0.1, "emitted_ratio": 0.5, "onset_median": 0.3, "within_0_2": 0.8, "within_0_3": 0.9},
            {**exact, "onset_median": math.nan, "within_0_2": 0.0},
        ),
    ]


def test_summary_names_the_worst_song_of_each_metric() -> None:
    summary = harness.summarise(_rows())
    assert summary["none"]["wer"] == pytest.approx({"mean": 0.3, "worst": 0.6, "worst_song": "b"})
    assert summary["none"]["emitted_ratio"]["worst_song"] == "b"
    assert summary["none"]["within_0_2"] == pytest.approx({"mean": 1.7 / 3, "worst": 0.3, "worst_song": "b"})
    exact_median = summary["exact"]["onset_median"]
    assert exact_median["worst_song"] == "c" and math.isnan(exact_median["worst"])
    assert exact_median["mean"] == pytest.approx(0.05)  # over the songs with a median
    assert summary["exact"]["within_0_2"]["worst_song"] == "c"
    # only songs with wrong lyrics count there
    assert summary["wrong"]["within_0_3"] == pytest.approx({"mean": 0.575, "worst": 0.3, "worst_song": "b"})
    assert summary["wrong"]["unsung_reported"]["worst_song"] == "b"
    assert summary["stems"]["vocals_sdr"] == pytest.approx({"mean": 4.0, "worst": 2.0, "worst_song": "b"})


def test_targets_are_judged_on_the_worst_song_or_the_mean() -> None:
    rows = _rows()
    judged = {(t["condition"], t["metric"]): t for t in harness.judge(harness.summarise(rows))}
    assert judged["none", "wer"]["value"] == pytest.approx(0.3) and judged["none", "wer"]["met"]
    assert judged["none", "wer"]["song"] is None
    assert not judged["none", "emitted_ratio"]["met"] and judged["none", "emitted_ratio"]["song"] == "b"
    assert not judged["exact", "onset_median"]["met"]  # song c has none
    assert not judged["wrong", "unsung_reported"]["met"]
    # song a alone meets every target
    good = harness.judge(harness.summarise(rows[:1]))
    assert all(t["met"] for t in good), good


def test_report_tables_and_json_with_nan_as_null(tmp_path: Path) -> None:
    run = {
        "dataset": "d",
        "separation_model": "s",
        "transcription_model": "t",
        "code": "abc",
        "threads": 1,
        "audio_seconds": 180.0,
        "wall_seconds": 1.0,
    }
    rows = _rows()
    rows[2]["errors"] = {"exact": "job j ended JOB_STATE_FAILED: boom"}
    markdown = harness.write_results(harness.results(rows, run), tmp_path)
    assert (tmp_path / "eval.md").read_text() == markdown

    def reject(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    document = json.loads((tmp_path / "eval.json").read_text(), parse_constant=reject)
    assert document["summary"]["exact"]["onset_median"]["worst"] is None
    assert "- c, exact lyrics: job j ended JOB_STATE_FAILED: boom" in markdown
    assert "| WER against the sung words (%) | 30.0 (worst 60.0, b) | 0.0 (worst 0.0, a) |" in markdown
    assert (
        "| no lyrics: words placed / words sung | ≤ 1.3, every song | worst song | 1.50 | b | no |"
        in markdown
    )
    for table in markdown.split("\n\n"):
        if table.startswith("| "):
            assert len({line.count("|") for line in table.splitlines()}) == 1, "ragged table"


def test_transcription_cost_table_names_the_worst_input() -> None:
    from bench.transcription_cost import table

    def row(kind: str, seconds: float, audio: float, words: int | None) -> dict:
        return {
            "kind": kind,
            "input": f"{kind} input",
            "audio_seconds": audio,
            "seconds": seconds,
            "ratio": round(seconds / audio, 2),
            "words": words,
            "timed_out": words is None,
        }

    fast = [row("spoken", 3.0, 30.0, 60), row("silent", 0.1, 60.0, 0)]
    assert table(fast).endswith(
        "Worst: spoken (spoken input), 0.10 s per second of audio. "
        "Target: no input over 1x its duration; met: yes."
    )
    slow = table([*fast, row("separated", 600.0, 6.0, None)])
    assert "| separated | separated input | > 600.0 | 6.0 | > 100.00 | — |" in slow
    assert slow.endswith("met: no.") and "Worst: separated (separated input), 100.00 s" in slow
