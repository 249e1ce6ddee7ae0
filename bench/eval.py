"""Evaluates the karaoke pipeline on songs with known stems and word times, against the same models
used the naive way.

Each song dir of DATASET_DIR holds mixture.wav|flac, vocals.*, the instrumental (instrumental.*, or
drums + bass + other, or else mixture − vocals) and truth.json ({"lyrics", "words": [{"word",
"start", "end"}]}), as bench.synth writes them. The harness runs every song through the real
pipeline over gRPC twice, without lyrics and with the true lyrics given, and runs the naive
baselines alongside: Spleeter's separate() on the mixture, then transformers' ASR pipeline with
word timestamps on those vocals, and on the mixture itself. It writes OUT/eval.md, eval.json and
eval.png and prints the table.

    python -m bench.eval DATASET_DIR [--out bench/results] [--songs N] [--server HOST:PORT]
        [--separation-model DIR] [--transcription-model DIR] [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from bench.metrics import onset_summary, sdr, word_onset_errors
from roar import client
from roar.audio import decode, match_channels, resample, to_mono
from roar.progress import no_progress
from roar.text import edit_distance, normalized_words
from roar.v1 import orchestrator_pb2 as pb
from roar.v1 import orchestrator_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[1]
SHARED_MODELS = REPO.parent / "shared" / "models"
AUDIO_EXTENSIONS = ("wav", "flac")
ASR_SAMPLE_RATE = 16_000
ONSET_TOLERANCE = 0.2  # seconds

SYSTEMS = {
    "pipeline": "roar pipeline",
    "naive": "naive: Spleeter, then Whisper on its vocals",
    "mixture": "naive: Whisper on the mixture (SDR: the mixture as is)",
}
PIPELINE, NAIVE, MIXTURE = SYSTEMS


@dataclass(frozen=True)
class Metric:
    key: str
    label: str  # for the summary table and the plot
    column: str  # short, for the per-song table
    scale: float = 1.0  # stored value -> shown value (fractions as %, seconds as ms)
    digits: int = 1


METRICS = (
    Metric("vocals_sdr", "vocals SDR (dB)", "voc SDR", digits=2),
    Metric("instrumental_sdr", "instrumental SDR (dB)", "inst SDR", digits=2),
    Metric("wer", "WER, no lyrics (%)", "WER", 100.0),
    Metric("onset_median", "onset error median, no lyrics (ms)", "onset med", 1000.0, 0),
    Metric("onset_mean", "onset error mean, no lyrics (ms)", "onset mean", 1000.0, 0),
    Metric("within_0_2", "words within 0.2 s, no lyrics (%)", "≤0.2 s", 100.0),
    Metric("matched", "words matched, no lyrics (%)", "matched", 100.0),
    Metric("lyrics_wer", "WER, with lyrics (%)", "L: WER", 100.0),
    Metric("lyrics_onset_median", "onset error median, with lyrics (ms)", "L: onset med", 1000.0, 0),
    Metric("lyrics_onset_mean", "onset error mean, with lyrics (ms)", "L: onset mean", 1000.0, 0),
    Metric("lyrics_within_0_2", "words within 0.2 s, with lyrics (%)", "L: ≤0.2 s", 100.0),
    Metric("lyrics_matched", "words matched, with lyrics (%)", "L: matched", 100.0),
)
METRIC_KEYS = tuple(m.key for m in METRICS)

# The pipeline's stems are 16-bit WAV files, whose rounding alone costs about 1e-4 dB of SDR.
SDR_TOLERANCE = 0.01
# The pipeline's targets: metric -> (the target as text, whether the pipeline's value meets it given
# every system's values).
TARGETS: dict[str, tuple[str, Callable[[float, dict[str, dict[str, float]]], bool]]] = {
    "vocals_sdr": (
        f"≥ naive − {SDR_TOLERANCE} dB",
        lambda value, values: value >= values[NAIVE]["vocals_sdr"] - SDR_TOLERANCE,
    ),
    "wer": ("≤ 35 %", lambda value, values: value <= 0.35),
    "lyrics_onset_median": ("≤ 80 ms", lambda value, values: value <= 0.080),
    "lyrics_within_0_2": ("≥ 90 %", lambda value, values: value >= 0.90),
}

# The plot: one panel per quantity, a group of bars per variant, a bar per system.
PANELS = (
    ("SDR (dB), higher is better", (("vocals", "vocals_sdr"), ("instrumental", "instrumental_sdr"))),
    ("WER (%), lower is better", (("no lyrics", "wer"), ("with lyrics", "lyrics_wer"))),
    (
        "onset error median (ms), lower is better",
        (("no lyrics", "onset_median"), ("with lyrics", "lyrics_onset_median")),
    ),
    (
        "words within 0.2 s (%), higher is better",
        (("no lyrics", "within_0_2"), ("with lyrics", "lyrics_within_0_2")),
    ),
)
TARGET_LINES = {"wer": 0.35, "lyrics_onset_median": 0.080, "lyrics_within_0_2": 0.90}


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
    return Song(song_dir.name, mixture_path, rate, mixture, vocals, instrumental, truth)


# --- scores ---


@dataclass(frozen=True)
class WordScore:
    """One transcript of one song against the truth, in counts that add up over songs."""

    edits: int
    truth_words: int
    onset_errors: tuple[float, ...]  # seconds, one per word matched by text


@dataclass(frozen=True)
class Outcome:
    """What one system made of one song."""

    vocals_sdr: float
    instrumental_sdr: float
    words: WordScore
    lyrics_words: WordScore | None = None  # only the pipeline takes the user's lyrics


def score_words(truth: dict, hypothesis: Sequence[dict]) -> WordScore:
    """Words [{"word", "start"}] (start may be None: not timed) against truth.json's words."""
    reference = normalized_words(" ".join(w["word"] for w in truth["words"]))
    heard = normalized_words(" ".join(w["word"] for w in hypothesis))
    timed = [w for w in hypothesis if w["start"] is not None]
    errors = word_onset_errors(truth["words"], timed)
    return WordScore(edit_distance(reference, heard), len(reference), tuple(errors))


def score_stem(reference: np.ndarray, reference_rate: int, estimate: np.ndarray, rate: int) -> float:
    """SDR of an estimate at any rate and channel count, brought to the reference's."""
    estimate = match_channels(resample(estimate, rate, reference_rate), reference.shape[0])
    return sdr(reference, estimate)


def word_metrics(scores: Sequence[WordScore], prefix: str = "") -> dict[str, float]:
    """WER and onset figures over all the words of the scores. Unmatched words count as misses in
    within_0_2 (the share of all true words sung within 0.2 s); median and mean are over matched words."""
    truth_words = sum(s.truth_words for s in scores)
    errors = [e for s in scores for e in s.onset_errors]
    summary = onset_summary(errors)
    within = sum(e <= ONSET_TOLERANCE for e in errors)
    return {
        f"{prefix}wer": sum(s.edits for s in scores) / truth_words,
        f"{prefix}onset_median": summary["median"],
        f"{prefix}onset_mean": summary["mean"],
        f"{prefix}within_0_2": within / truth_words,
        f"{prefix}matched": len(errors) / truth_words,
    }


def metrics(outcomes: Sequence[Outcome]) -> dict[str, float]:
    """Every metric over the outcomes (one song or many): SDRs averaged over songs, word figures
    over all words. Metrics a system does not have (lyrics for the naive ones) are NaN."""
    values = dict.fromkeys(METRIC_KEYS, math.nan)
    values["vocals_sdr"] = float(np.mean([o.vocals_sdr for o in outcomes]))
    values["instrumental_sdr"] = float(np.mean([o.instrumental_sdr for o in outcomes]))
    values.update(word_metrics([o.words for o in outcomes]))
    lyrics = [o.lyrics_words for o in outcomes]
    if all(s is not None for s in lyrics):
        values.update(word_metrics(lyrics, "lyrics_"))
    return values


# --- the pipeline over gRPC ---


@dataclass
class PipelineOutput:
    vocals: np.ndarray
    instrumental: np.ndarray
    sample_rate: int
    words: list[dict]
    lyrics_words: list[dict]


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


async def run_pipeline_song(
    stub: pb_grpc.OrchestratorStub, song: Song, work_dir: Path, log: Log
) -> PipelineOutput:
    """The song's two jobs, without and with the true lyrics, at once; the stems from the first. Jobs
    name no model: they get the server's defaults (the harness's models when it starts the suite)."""
    upload = await client.upload_file(stub, song.mixture_path)

    async def job(lyrics: str) -> str:
        try:
            job_id = await _run_job(stub, upload.upload_id, pb.JobOptions(lyrics=lyrics))
        except RuntimeError as exc:
            raise RuntimeError(f"{song.name} ({'with' if lyrics else 'without'} lyrics): {exc}") from exc
        log(f"{song.name}: pipeline {'with' if lyrics else 'without'} lyrics done")
        return job_id

    plain, with_lyrics = await asyncio.gather(job(""), job(song.truth["lyrics"]))
    vocals = decode(await _download(stub, plain, "vocals.wav", work_dir))
    instrumental = decode(await _download(stub, plain, "instrumental.wav", work_dir))
    words = json.loads(await _download(stub, plain, "words.json", work_dir))
    lyrics_words = json.loads(await _download(stub, with_lyrics, "words.json", work_dir))
    return PipelineOutput(vocals.audio, instrumental.audio, vocals.sample_rate, words, lyrics_words)


async def run_pipeline(address: str, songs: Sequence[Song], work_dir: Path, log: Log) -> list[PipelineOutput]:
    """Every song's jobs submitted at once; the orchestrator queues them."""
    async with client.channel(address) as channel:
        stub = pb_grpc.OrchestratorStub(channel)
        return await asyncio.gather(*(run_pipeline_song(stub, s, work_dir, log) for s in songs))


# --- the naive baselines ---


@dataclass
class NaiveOutput:
    vocals: np.ndarray  # at the song's rate
    instrumental: np.ndarray
    words: list[dict]
    mixture_words: list[dict]


def _asr_words(asr, audio: np.ndarray, sample_rate: int) -> list[dict]:
    """Whisper as its model card shows it: 16 kHz mono in, word timestamps, 30 s chunks for long
    audio (one chunk, as without chunking, for shorter audio)."""
    mono = resample(to_mono(audio), sample_rate, ASR_SAMPLE_RATE)
    output = asr(mono, return_timestamps="word", chunk_length_s=30)
    return [{"word": c["text"].strip(), "start": c["timestamp"][0]} for c in output["chunks"]]


def run_naive(
    songs: Sequence[Song], models: dict[str, str], log: Log, stop: threading.Event
) -> list[NaiveOutput]:
    """Spleeter on each mixture, Whisper on its vocals and on the mixture, one song at a time."""
    from transformers import logging as transformers_logging
    from transformers import pipeline

    from services.separation.spleeter import SpleeterSeparator

    # Its per-call warnings (chunking is "experimental", generation_config) say nothing new each time.
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    separator = SpleeterSeparator(Path(models["separation"]))
    asr = pipeline("automatic-speech-recognition", model=models["transcription"], device="cpu")
    outputs = []
    for song in songs:
        if stop.is_set():
            break
        mixture = resample(song.mixture, song.sample_rate, separator.sample_rate)
        stems = separator.separate(match_channels(mixture, separator.channels), no_progress)
        vocals, instrumental = (
            resample(stems[name], separator.sample_rate, song.sample_rate)
            for name in ("vocals", "accompaniment")
        )
        outputs.append(
            NaiveOutput(
                vocals,
                instrumental,
                _asr_words(asr, vocals, song.sample_rate),
                _asr_words(asr, song.mixture, song.sample_rate),
            )
        )
        log(f"{song.name}: naive baselines done")
    return outputs


# --- the evaluation ---


def song_outcomes(song: Song, piped: PipelineOutput, naive: NaiveOutput) -> dict[str, Outcome]:
    rate = song.sample_rate
    return {
        PIPELINE: Outcome(
            score_stem(song.vocals, rate, piped.vocals, piped.sample_rate),
            score_stem(song.instrumental, rate, piped.instrumental, piped.sample_rate),
            score_words(song.truth, piped.words),
            score_words(song.truth, piped.lyrics_words),
        ),
        NAIVE: Outcome(
            sdr(song.vocals, naive.vocals),
            sdr(song.instrumental, naive.instrumental),
            score_words(song.truth, naive.words),
        ),
        MIXTURE: Outcome(
            sdr(song.vocals, song.mixture),
            sdr(song.instrumental, song.mixture),
            score_words(song.truth, naive.mixture_words),
        ),
    }


async def evaluate(
    songs: Sequence[Song], models: dict[str, str], address: str, work_dir: Path, threads: int, log: Log
) -> tuple[list[dict[str, Outcome]], dict[str, float]]:
    """Per song, each system's outcome; and the wall seconds of the pipeline and naive runs, which
    run at the same time (each model process on `threads` threads)."""
    import torch

    torch.set_num_threads(threads)
    stop = threading.Event()
    walls: dict[str, float] = {}

    async def timed(name: str, work):
        start = time.monotonic()
        result = await work
        walls[name] = round(time.monotonic() - start, 1)
        return result

    try:
        piped, naive = await asyncio.gather(
            timed(PIPELINE, run_pipeline(address, songs, work_dir, log)),
            timed(NAIVE, asyncio.to_thread(run_naive, songs, models, log, stop)),
        )
    finally:
        stop.set()  # a failed pipeline ends the naive run after its current song
    outcomes = [song_outcomes(*parts) for parts in zip(songs, piped, naive, strict=True)]
    return outcomes, walls


def results(songs: Sequence[Song], outcomes: Sequence[dict[str, Outcome]], run: dict) -> dict:
    """The JSON document: per-song metrics, the metrics over all songs, the targets and the run."""
    overall = {system: metrics([o[system] for o in outcomes]) for system in SYSTEMS}
    return {
        "systems": SYSTEMS,
        "metrics": {m.key: m.label for m in METRICS},
        "songs": [
            {
                "song": song.name,
                "seconds": round(song.seconds, 2),
                "words": len(song.truth["words"]),
                "metrics": {system: metrics([o]) for system, o in outcome.items()},
            }
            for song, outcome in zip(songs, outcomes, strict=True)
        ],
        "all": overall,
        "targets": {
            key: {"target": text, "met": bool(met(overall[PIPELINE][key], overall))}
            for key, (text, met) in TARGETS.items()
        },
        "run": run,
    }


# --- output ---


def format_value(metric: Metric, value: float | None) -> str:
    if value is None or math.isnan(value):
        return "—"
    return f"{value * metric.scale:.{metric.digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], right_from: int = 1) -> str:
    """A GitHub markdown table; columns from `right_from` on are right-aligned (numbers)."""
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def summary_table(document: dict) -> str:
    overall, targets = document["all"], document["targets"]
    header = ["metric", *SYSTEMS, "target", "met"]
    rows = []
    for metric in METRICS:
        target = targets.get(metric.key)
        rows.append(
            [
                metric.label,
                *(format_value(metric, overall[system][metric.key]) for system in SYSTEMS),
                target["target"] if target else "",
                ("yes" if target["met"] else "no") if target else "",
            ]
        )
    return markdown_table(header, rows)


def song_table(document: dict) -> str:
    header = ["song", "s", "words", "system", *(m.column for m in METRICS)]
    rows = [
        [
            row["song"],
            f"{row['seconds']:.1f}",
            str(row["words"]),
            system,
            *(format_value(m, row["metrics"][system][m.key]) for m in METRICS),
        ]
        for row in document["songs"]
        for system in SYSTEMS
    ]
    return markdown_table(header, rows, right_from=1)


def report(document: dict) -> str:
    run = document["run"]
    systems = "\n".join(f"- **{name}**: {text}" for name, text in SYSTEMS.items())
    return f"""# Evaluation: {len(document["songs"])} songs from {run["dataset"]}

Separation model `{run["separation_model"]}`, transcription model `{run["transcription_model"]}`;
wall time {run["wall_seconds"]} s (pipeline {run["pipeline_seconds"]} s and naive
{run["naive_seconds"]} s, run at the same time, {run["threads"]} torch thread(s) per model process).

{systems}

SDR: mean over songs. WER and onsets: over all words of all songs. Onset median and mean are over
the words matched by text; "within 0.2 s" counts unmatched words as misses.

{summary_table(document)}

## Per song

{song_table(document)}
"""


def plot(document: dict, path: Path) -> None:
    """Grouped bars of the metrics over all songs, one panel per quantity, with the targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_key = {m.key: m for m in METRICS}
    overall = document["all"]
    figure, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    width = 0.8 / len(SYSTEMS)
    for ax, (title, groups) in zip(axes.flat, PANELS, strict=True):
        for index, system in enumerate(SYSTEMS):
            positions, heights = [], []
            for group, (_, key) in enumerate(groups):
                value = overall[system][key]
                if value is not None and not math.isnan(value):
                    positions.append(group + (index - (len(SYSTEMS) - 1) / 2) * width)
                    heights.append(value * by_key[key].scale)
            bars = ax.bar(positions, heights, width, label=SYSTEMS[system])
            ax.bar_label(bars, fmt="%.3g", fontsize=8)
        for group, (_, key) in enumerate(groups):
            if key in TARGET_LINES:
                target = TARGET_LINES[key] * by_key[key].scale
                ax.hlines(target, group - 0.45, group + 0.45, colors="black", linestyles="dashed")
        ax.set_xticks(range(len(groups)), [name for name, _ in groups])
        ax.set_xlim(-0.5, len(groups) - 0.5)
        ax.set_title(title, fontsize=10)
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.margins(y=0.12)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(SYSTEMS), fontsize=8, frameon=False)
    figure.suptitle(f"{len(document['songs'])} songs; dashed lines: the pipeline's targets", fontsize=11)
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    figure.savefig(path, dpi=100)
    plt.close(figure)


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
    """eval.json, eval.md and eval.png in out_dir; returns the markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval.json").write_text(json.dumps(_finite_or_none(document), indent=2) + "\n")
    markdown = report(document)
    (out_dir / "eval.md").write_text(markdown)
    plot(document, out_dir / "eval.png")
    return markdown


# --- command line ---


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path, help="a dir of song dirs, e.g. from bench.synth")
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="where results go")
    parser.add_argument("--songs", type=int, help="only the first N songs")
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
    models = {
        "separation": str(args.separation_model.resolve()),
        "transcription": str(args.transcription_model.resolve()),
    }
    log = Log()
    with tempfile.TemporaryDirectory(prefix="roar-eval-") as tmp:
        work_dir = Path(tmp)
        suite = None
        if args.server is None:
            from tests.support.suite import Suite

            env = {
                "ROAR_SEPARATION_MODEL": models["separation"],
                "ROAR_TRANSCRIPTION_MODEL": models["transcription"],
                "ROAR_TORCH_THREADS": str(args.threads),
                "HF_HUB_OFFLINE": "1",
            }
            suite = Suite(work_dir / "data", env, work_dir / "roar-up.log")
            suite.start()
            log(f"roar up serving at {suite.address}")
        try:
            address = args.server or suite.address
            outcomes, walls = asyncio.run(evaluate(songs, models, address, work_dir, args.threads, log))
        finally:
            if suite is not None:
                suite.stop()
    run = {
        "dataset": str(args.dataset),
        "separation_model": models["separation"],
        "transcription_model": models["transcription"],
        "server": args.server or "started by the harness",
        "threads": args.threads,
        "wall_seconds": round(time.monotonic() - log.start, 1),
        "pipeline_seconds": walls[PIPELINE],
        "naive_seconds": walls[NAIVE],
    }
    markdown = write_results(results(songs, outcomes, run), args.out)
    print(markdown)


if __name__ == "__main__":
    main()
