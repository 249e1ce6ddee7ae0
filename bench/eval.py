"""Evaluates the karaoke pipeline's timed lyrics on songs with known stems and word times, under three
conditions per song: no lyrics, the exact lyrics, and wrong lyrics (a line that is never sung added,
a sung line left out). Reports the mean over songs and the worst song of every metric.

Each song dir of DATASET_DIR holds mixture.wav|flac, vocals.*, the instrumental (instrumental.*, or
drums + bass + other, or else mixture − vocals), truth.json ({"lyrics", "words": [{"word", "start",
"end"}], optionally "unsung_lines"}), and the lyrics as a user would give them: lyrics.txt (else
truth.json's "lyrics") and lyrics_wrong.txt (songs without one skip the wrong-lyrics condition), as
bench.synth writes them. The harness runs every song through the real pipeline over gRPC, once per
condition, and writes OUT/eval.md and eval.json and prints the report.

    python -m bench.eval DATASET_DIR [--out bench/results] [--songs N] [--server HOST:PORT]
        [--conditions none exact wrong] [--separation-model DIR] [--transcription-model DIR]
        [--threads N] [--job-timeout S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import soundfile as sf

from bench.metrics import (
    falsely_unsung,
    placed_words,
    sdr,
    share_within,
    unsung_reported,
    word_onset_errors,
)
from roar import client
from roar.audio import decode, match_channels, resample
from roar.text import edit_distance, normalized_words
from roar.v1 import orchestrator_pb2 as pb
from roar.v1 import orchestrator_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[1]
SHARED_MODELS = REPO.parent / "shared" / "models"
AUDIO_EXTENSIONS = ("wav", "flac")

CONDITIONS = {"none": "no lyrics", "exact": "exact lyrics", "wrong": "wrong lyrics"}


@dataclass(frozen=True)
class Metric:
    key: str
    label: str  # for the summary tables
    column: str  # short, for the per-song table
    scale: float = 1.0  # stored value -> shown value (fractions as %, seconds as ms)
    digits: int = 1
    lower_is_better: bool = True  # which end is the worst song


METRICS = {
    m.key: m
    for m in (
        Metric("wer", "WER against the sung words (%)", "WER", 100.0),
        Metric("emitted_ratio", "words placed / words sung", "placed/sung", digits=2),
        Metric("onset_median", "onset error median (ms)", "med ms", 1000.0, 0),
        Metric("within_0_2", "sung words within 0.2 s (%)", "≤0.2 s", 100.0, lower_is_better=False),
        Metric("within_0_3", "sung words within 0.3 s (%)", "≤0.3 s", 100.0, lower_is_better=False),
        Metric("unsung_reported", "unsung line reported not sung (%)", "unsung rep", 100.0, 0, False),
        Metric("falsely_unsung", "sung lines reported not sung", "false unsung", digits=0),
        Metric("vocals_sdr", "vocals SDR (dB)", "voc SDR", digits=2, lower_is_better=False),
        Metric("instrumental_sdr", "instrumental SDR (dB)", "inst SDR", digits=2, lower_is_better=False),
    )
}
# The metrics that mean something under each condition.
CONDITION_METRICS = {
    "none": ("wer", "emitted_ratio", "onset_median", "within_0_2", "within_0_3"),
    "exact": ("wer", "emitted_ratio", "onset_median", "within_0_2", "within_0_3", "falsely_unsung"),
    "wrong": (
        "wer",
        "emitted_ratio",
        "onset_median",
        "within_0_2",
        "within_0_3",
        "unsung_reported",
        "falsely_unsung",
    ),
}
SDR_METRICS = ("vocals_sdr", "instrumental_sdr")
# The per-song table's columns: (condition or "" for the song's stems, metric).
SONG_COLUMNS = (
    ("", "vocals_sdr"),
    ("none", "wer"),
    ("none", "emitted_ratio"),
    ("none", "within_0_2"),
    ("exact", "onset_median"),
    ("exact", "within_0_2"),
    ("exact", "falsely_unsung"),
    ("wrong", "onset_median"),
    ("wrong", "within_0_3"),
    ("wrong", "unsung_reported"),
    ("wrong", "falsely_unsung"),
)


@dataclass(frozen=True)
class Target:
    condition: str
    metric: str
    over: str  # "worst": every song must meet it; "mean": the mean over songs
    threshold: float
    text: str

    def met(self, value: float) -> bool:
        if math.isnan(value):
            return False
        lower = METRICS[self.metric].lower_is_better
        return value <= self.threshold if lower else value >= self.threshold


TARGETS = (
    Target("exact", "onset_median", "worst", 0.080, "≤ 80 ms, every song"),
    Target("exact", "within_0_2", "worst", 0.90, "≥ 90 %, every song"),
    Target("wrong", "within_0_3", "worst", 0.80, "≥ 80 %, every song"),
    Target("wrong", "unsung_reported", "worst", 1.0, "reported, every song"),
    Target("none", "wer", "mean", 0.35, "≤ 35 %, mean"),
    Target("none", "emitted_ratio", "worst", 1.3, "≤ 1.3, every song"),
)


# --- songs ---


@dataclass
class Song:
    name: str
    mixture_path: Path
    sample_rate: int
    mixture: np.ndarray  # (channels, frames) float32
    vocals: np.ndarray
    instrumental: np.ndarray
    truth: dict
    lyrics: dict[str, str]  # condition -> the lyrics given ("" for none); only the conditions it has

    @property
    def seconds(self) -> float:
        return self.mixture.shape[1] / self.sample_rate


def _audio_file(song_dir: Path, stem: str) -> Path | None:
    return next((p for ext in AUDIO_EXTENSIONS if (p := song_dir / f"{stem}.{ext}").is_file()), None)


def _read(path: Path, sample_rate: int) -> np.ndarray:
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    if rate != sample_rate:
        raise ValueError(f"{path} is at {rate} Hz, the mixture at {sample_rate} Hz")
    return audio.T


def song_dirs(dataset_dir: Path) -> list[Path]:
    """The dirs under dataset_dir holding a mixture, in name order."""
    return sorted(d for d in dataset_dir.iterdir() if d.is_dir() and _audio_file(d, "mixture"))


def load_song(song_dir: Path) -> Song:
    mixture_path = _audio_file(song_dir, "mixture")
    vocals_path = _audio_file(song_dir, "vocals")
    if mixture_path is None or vocals_path is None or not (song_dir / "truth.json").is_file():
        raise ValueError(f"{song_dir} needs mixture.wav|flac, vocals.wav|flac and truth.json")
    rate = sf.info(mixture_path).samplerate
    mixture = _read(mixture_path, rate)
    vocals = _read(vocals_path, rate)
    band = [_audio_file(song_dir, stem) for stem in ("drums", "bass", "other")]
    if instrumental_path := _audio_file(song_dir, "instrumental"):
        instrumental = _read(instrumental_path, rate)
    elif all(band):
        instrumental = sum(_read(path, rate) for path in band)
    else:  # 16-bit stems that add up exactly: the difference of their floats is exact too
        instrumental = mixture - vocals
    truth = json.loads((song_dir / "truth.json").read_text())
    exact = song_dir / "lyrics.txt"
    lyrics = {"none": "", "exact": exact.read_text() if exact.is_file() else truth["lyrics"]}
    if (wrong := song_dir / "lyrics_wrong.txt").is_file():
        lyrics["wrong"] = wrong.read_text()
    return Song(song_dir.name, mixture_path, rate, mixture, vocals, instrumental, truth, lyrics)


# --- scores ---


def score_condition(
    truth: Mapping, words: Sequence[Mapping], lines: Sequence[Mapping], condition: str
) -> dict:
    """One output (words.json and lines.json items) of one song against its truth, under a condition
    (the lines that are not sung count only under "wrong", the only lyrics that have one)."""
    sung = truth["words"]
    placed = placed_words(words)
    errors = word_onset_errors(sung, placed)
    reference = normalized_words(" ".join(w["word"] for w in sung))
    heard = normalized_words(" ".join(w["word"] for w in placed))
    unsung = truth.get("unsung_lines", []) if condition == "wrong" else []
    values = {
        "wer": edit_distance(reference, heard) / len(reference),
        "emitted_ratio": len(heard) / len(reference),
        "onset_median": float(np.median(errors)) if errors else math.nan,
        "within_0_2": share_within(sung, placed, 0.2),
        "within_0_3": share_within(sung, placed, 0.3),
        "unsung_reported": unsung_reported(unsung, lines),
        "falsely_unsung": float(falsely_unsung(unsung, lines)),
    }
    return {key: values[key] for key in CONDITION_METRICS[condition]}


def score_stem(reference: np.ndarray, reference_rate: int, estimate: np.ndarray, rate: int) -> float:
    """SDR of an estimate at any rate and channel count, brought to the reference's."""
    estimate = match_channels(resample(estimate, rate, reference_rate), reference.shape[0])
    return sdr(reference, estimate)


def _badness(metric: str, value: float) -> float:
    """Higher is worse; NaN (no word matched, say) is the worst of all."""
    if math.isnan(value):
        return math.inf
    return value if METRICS[metric].lower_is_better else -value


def mean_and_worst(values: Mapping[str, float], metric: str) -> dict:
    """{"mean", "worst", "worst_song"} of one metric's values by song. The mean leaves out NaN."""
    if not values:
        return {"mean": math.nan, "worst": math.nan, "worst_song": None}
    finite = [v for v in values.values() if not math.isnan(v)]
    song = max(values, key=lambda name: _badness(metric, values[name]))
    return {"mean": float(np.mean(finite)) if finite else math.nan, "worst": values[song], "worst_song": song}


def summarise(rows: Sequence[dict]) -> dict:
    """Per condition and metric, the mean over songs and the worst song; the same for the SDRs."""
    summary: dict[str, dict] = {}
    for condition, keys in CONDITION_METRICS.items():
        scored = [row for row in rows if condition in row["conditions"]]
        if scored:
            summary[condition] = {
                key: mean_and_worst({r["song"]: r["conditions"][condition][key] for r in scored}, key)
                for key in keys
            }
    summary["stems"] = {
        key: mean_and_worst({r["song"]: r["stems"][key] for r in rows}, key) for key in SDR_METRICS
    }
    return summary


def judge(summary: Mapping[str, dict]) -> list[dict]:
    """Each target with the value it is judged on (the worst song's or the mean) and whether it is met."""
    judged = []
    for target in TARGETS:
        figures = summary.get(target.condition, {}).get(target.metric)
        value = math.nan if figures is None else figures[target.over]
        judged.append(
            {
                "condition": target.condition,
                "metric": target.metric,
                "over": target.over,
                "target": target.text,
                "value": value,
                "song": figures["worst_song"] if figures and target.over == "worst" else None,
                "met": target.met(value),
            }
        )
    return judged


# --- the pipeline over gRPC ---


@dataclass
class JobOutput:
    words: list[dict] = field(default_factory=list)
    lines: list[dict] = field(default_factory=list)
    error: str = ""  # why the job failed; its output is then empty


@dataclass
class SongOutput:
    jobs: dict[str, JobOutput]  # by condition
    stems: dict[str, float]  # SDRs of the pipeline's stems, NaN when no job gave them


class Log:
    """Progress lines on stderr, with the seconds since the start."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def __call__(self, message: str) -> None:
        print(f"[{time.monotonic() - self.start:6.1f} s] {message}", file=sys.stderr, flush=True)


async def _run_job(stub: pb_grpc.OrchestratorStub, upload_id: str, options: pb.JobOptions) -> str:
    final: pb.ProgressEvent | None = None
    async for event in client.process(stub, upload_id, options):
        final = event
    if final is None:
        raise RuntimeError("the job sent no events")
    if final.state != pb.JOB_STATE_SUCCEEDED:
        errors = "; ".join(f"{e.code}: {e.message}" for e in final.errors) or final.error.message
        raise RuntimeError(f"job {final.job_id} ended {pb.JobState.Name(final.state)}: {errors}")
    return final.job_id


async def _download(stub: pb_grpc.OrchestratorStub, job_id: str, name: str, work_dir: Path) -> bytes:
    target = work_dir / f"{job_id}-{name}"
    await client.download(stub, job_id, name, target)
    return target.read_bytes()


@dataclass(frozen=True)
class RunOptions:
    separation_model: str
    transcription_model: str
    conditions: tuple[str, ...]
    job_timeout: float  # seconds; 0: the server's limit


async def run_song(
    stub: pb_grpc.OrchestratorStub, song: Song, options: RunOptions, work_dir: Path, log: Log
) -> SongOutput:
    """The song's jobs, one per condition, at once; the stems of the first that succeeds are scored."""
    upload = await client.upload_file(stub, song.mixture_path)
    conditions = [c for c in options.conditions if c in song.lyrics]
    job_ids: dict[str, str] = {}

    async def job(condition: str) -> JobOutput:
        job_options = pb.JobOptions(
            # No model named: the server's defaults (the harness's models when it starts the suite).
            lyrics=song.lyrics[condition],
            timeout_seconds=options.job_timeout,
        )
        try:
            job_id = await _run_job(stub, upload.upload_id, job_options)
            words = json.loads(await _download(stub, job_id, "words.json", work_dir))
            lines = json.loads(await _download(stub, job_id, "lines.json", work_dir))
        except (RuntimeError, grpc.aio.AioRpcError) as exc:  # scored as an empty output, saying why
            log(f"{song.name}: {CONDITIONS[condition]}: {exc}")
            return JobOutput(error=str(exc))
        job_ids[condition] = job_id
        log(f"{song.name}: {CONDITIONS[condition]} done")
        return JobOutput(words, lines)

    outputs = await asyncio.gather(*(job(c) for c in conditions))
    stems = dict.fromkeys(SDR_METRICS, math.nan)
    if job_ids:
        job_id = job_ids[next(c for c in conditions if c in job_ids)]
        for key, name, truth in (
            ("vocals_sdr", "vocals.wav", song.vocals),
            ("instrumental_sdr", "instrumental.wav", song.instrumental),
        ):
            decoded = decode(await _download(stub, job_id, name, work_dir))
            stems[key] = score_stem(truth, song.sample_rate, decoded.audio, decoded.sample_rate)
    return SongOutput(dict(zip(conditions, outputs, strict=True)), stems)


async def run_pipeline(
    address: str, songs: Sequence[Song], options: RunOptions, work_dir: Path, log: Log
) -> list[SongOutput]:
    """Every song's jobs submitted at once; the orchestrator queues them."""
    async with client.channel(address) as channel:
        stub = pb_grpc.OrchestratorStub(channel)
        return await asyncio.gather(*(run_song(stub, s, options, work_dir, log) for s in songs))


# --- the evaluation ---


def song_row(song: Song, output: SongOutput) -> dict:
    return {
        "song": song.name,
        "seconds": round(song.seconds, 2),
        "words": len(song.truth["words"]),
        "style": song.truth.get("style", {}),
        "markup": song.truth.get("markup", False),
        "stems": output.stems,
        "conditions": {
            condition: score_condition(song.truth, job.words, job.lines, condition)
            for condition, job in output.jobs.items()
        },
        "errors": {condition: job.error for condition, job in output.jobs.items() if job.error},
    }


def results(rows: Sequence[dict], run: dict) -> dict:
    """The JSON document: per-song metrics, means and worst songs, the targets and the run."""
    summary = summarise(rows)
    return {
        "conditions": CONDITIONS,
        "metrics": {key: m.label for key, m in METRICS.items()},
        "songs": list(rows),
        "summary": summary,
        "targets": judge(summary),
        "run": run,
    }


# --- output ---


def format_value(metric: str, value: float | None) -> str:
    if value is None or math.isnan(value):
        return "—"
    m = METRICS[metric]
    return f"{value * m.scale:.{m.digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], right_from: int = 1) -> str:
    """A GitHub markdown table; columns from `right_from` on are right-aligned (numbers)."""
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def _mean_worst(metric: str, figures: Mapping | None) -> str:
    if figures is None:
        return ""
    mean, worst = format_value(metric, figures["mean"]), format_value(metric, figures["worst"])
    return f"{mean} (worst {worst}, {figures['worst_song']})"


def condition_table(document: dict) -> str:
    """Metric rows, a column per condition: the mean over songs and the worst song."""
    summary = document["summary"]
    conditions = [c for c in CONDITIONS if c in summary]
    rows = []
    for key in dict.fromkeys(k for c in conditions for k in CONDITION_METRICS[c]):
        rows.append([METRICS[key].label, *(_mean_worst(key, summary[c].get(key)) for c in conditions)])
    for key in SDR_METRICS:
        rows.append(
            [METRICS[key].label, _mean_worst(key, summary["stems"][key]), *[""] * (len(conditions) - 1)]
        )
    return markdown_table(["metric", *(CONDITIONS[c] for c in conditions)], rows)


def target_table(document: dict) -> str:
    rows = [
        [
            f"{CONDITIONS[t['condition']]}: {METRICS[t['metric']].label}",
            t["target"],
            "mean" if t["over"] == "mean" else "worst song",
            format_value(t["metric"], t["value"]),
            t["song"] or "",
            "yes" if t["met"] else "no",
        ]
        for t in document["targets"]
    ]
    return markdown_table(["metric", "target", "judged on", "value", "song", "met"], rows, right_from=3)


def song_table(document: dict) -> str:
    header = [
        "song",
        "s",
        "words",
        "voice",
        "vocals dB",
        "markup",
        *(f"{c + ': ' if c else ''}{METRICS[k].column}" for c, k in SONG_COLUMNS),
    ]
    rows = []
    for row in document["songs"]:
        style = row["style"]
        voice = f"{style.get('voice', '')}{' low' if style.get('low') else ''}"
        level = style.get("level_db")
        cells = []
        for condition, key in SONG_COLUMNS:
            values = row["stems"] if not condition else row["conditions"].get(condition, {})
            cells.append(format_value(key, values.get(key)) if key in values else "")
        rows.append(
            [
                row["song"],
                f"{row['seconds']:.0f}",
                str(row["words"]),
                voice,
                "" if level is None else f"{level:g}",
                "yes" if row["markup"] else "no",
                *cells,
            ]
        )
    return markdown_table(header, rows, right_from=1)


def report(document: dict) -> str:
    run = document["run"]
    failures = [
        f"- {row['song']}, {CONDITIONS[condition]}: {message}"
        for row in document["songs"]
        for condition, message in row["errors"].items()
    ]
    failed = "\n".join(["Failed jobs (scored as empty outputs):", *failures]) + "\n\n" if failures else ""
    songs = f"{len(document['songs'])} songs ({run['audio_seconds']:.0f} s)"
    return f"""# Evaluation: {songs} from {run["dataset"]}

Separation model `{run["separation_model"]}`, transcription model `{run["transcription_model"]}`,
code `{run["code"]}`; wall time {run["wall_seconds"]} s, {run["threads"]} torch thread(s) per model
process.

Every cell: the mean over songs, then the worst song. WER and "placed / sung" count the words the
output places as sung against the sung words; "within" counts unpaired sung words as misses; the
onset median is over the sung words paired by text. "vocals dB": the vocals' level against the band.

{failed}{condition_table(document)}

## Targets

{target_table(document)}

## Per song

{song_table(document)}
"""


def _finite_or_none(value: object) -> object:
    """NaN as null, since JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


def write_results(document: dict, out_dir: Path) -> str:
    """eval.json and eval.md in out_dir; returns the markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval.json").write_text(json.dumps(_finite_or_none(document), indent=2) + "\n")
    markdown = report(document)
    (out_dir / "eval.md").write_text(markdown)
    return markdown


def _code_version() -> str:
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return described.stdout.strip()


# --- command line ---


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path, help="a dir of song dirs, e.g. from bench.synth")
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="where results go")
    parser.add_argument("--songs", type=int, help="only the first N songs")
    parser.add_argument(
        "--conditions", nargs="+", choices=CONDITIONS, default=list(CONDITIONS), help="default: all three"
    )
    parser.add_argument(
        "--separation-model", type=Path, default=SHARED_MODELS / "spleeter-2stems", help="a Spleeter dir"
    )
    parser.add_argument(
        "--transcription-model", type=Path, default=SHARED_MODELS / "whisper-tiny.en", help="a Whisper dir"
    )
    parser.add_argument(
        "--server", help="a running orchestrator HOST:PORT that sees the same model dirs (default: start one)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=max(1, (os.cpu_count() or 2) // 2),
        help="torch threads per model process (default: half the cores)",
    )
    parser.add_argument(
        "--job-timeout", type=float, default=0.0, help="seconds a job may run (default: the server's limit)"
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    for name, path in (("separation", args.separation_model), ("transcription", args.transcription_model)):
        if not path.is_dir():
            raise SystemExit(f"no {name} model dir at {path}: give --{name}-model DIR")
    dirs = song_dirs(args.dataset)[: args.songs]
    if not dirs:
        raise SystemExit(f"no song dirs with a mixture.wav|flac in {args.dataset}")
    songs = [load_song(d) for d in dirs]
    options = RunOptions(
        str(args.separation_model.resolve()),
        str(args.transcription_model.resolve()),
        tuple(c for c in CONDITIONS if c in args.conditions),
        args.job_timeout,
    )
    log = Log()
    with tempfile.TemporaryDirectory(prefix="roar-eval-") as tmp:
        work_dir = Path(tmp)
        suite = None
        if args.server is None:
            from tests.support.suite import Suite

            env = {
                "ROAR_SEPARATION_MODEL": options.separation_model,
                "ROAR_TRANSCRIPTION_MODEL": options.transcription_model,
                "ROAR_TORCH_THREADS": str(args.threads),
                "HF_HUB_OFFLINE": "1",
            }
            suite = Suite(work_dir / "data", env, work_dir / "roar-up.log")
            suite.start()
            log(f"roar up serving at {suite.address}")
        try:
            outputs = asyncio.run(run_pipeline(args.server or suite.address, songs, options, work_dir, log))
        finally:
            if suite is not None:
                suite.stop()
    run = {
        "dataset": str(args.dataset),
        "separation_model": options.separation_model,
        "transcription_model": options.transcription_model,
        "server": args.server or "started by the harness",
        "code": _code_version(),
        "threads": args.threads,
        "audio_seconds": round(sum(s.seconds for s in songs), 1),
        "wall_seconds": round(time.monotonic() - log.start, 1),
    }
    rows = [song_row(song, output) for song, output in zip(songs, outputs, strict=True)]
    markdown = write_results(results(rows, run), args.out)
    print(markdown)


if __name__ == "__main__":
    main()
