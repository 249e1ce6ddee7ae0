"""What transcription costs on different inputs: seconds of transcription per second of audio, through
the real transcription service.

The service runs as a subprocess (`python -m services.transcription.server`, as `roar up` starts it)
and each input goes to it over gRPC as the orchestrator sends a vocals stem: the options, then the
file in chunks; the time is from the call's start to the transcript, so it is what a user waits for.
The model is loaded (and warmed up on a second of speech) before the first timed call. Inputs:

- instrumental: the band of a synthetic song (bench.synth's instrumental stem), and the MUSDB preview
  mixture from ../shared/audio/musdb-preview as given (band and voice, unseparated);
- spoken: the LibriVox utterances of ../shared/audio/librivox, one after another, 1 s apart;
- sung: the vocals stem of the same synthetic song, and the MUSDB preview's vocals stem (a real
  singer);
- separated: the vocals that Spleeter (../shared/models/spleeter-2stems) separates from those two
  mixtures, with what bleeds through from the band: what the pipeline transcribes;
- silent: 60 s of digital silence.

The synthetic song's vocals sit 5 dB under its band.

    python -m bench.transcription_cost [--model DIR] [--separation-model DIR] [--threads 1]
        [--timeout 600] [--song DIR] [--out bench/results]

A call that runs past --timeout is cut off and reported as "> timeout"; the service is then restarted,
so that its unfinished work does not slow the next input. Writes OUT/transcription_cost.md and .json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import soundfile as sf

from bench.pipeline import StageService
from roar.audio import encode
from roar.channel_options import CHANNEL_OPTIONS
from roar.service import request_stream
from roar.v1 import transcription_pb2, transcription_pb2_grpc

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SILENCE_SECONDS = 60.0
SPEECH_GAP_SECONDS = 1.0
SYNTH_SEED = 5
SYNTH_MAX_SECONDS = 70.0
SYNTH_VOCALS_DB = -5.0
MUSDB = SHARED / "audio" / "musdb-preview"


@dataclass(frozen=True)
class Input:
    kind: str
    name: str
    data: bytes  # the file the service receives
    seconds: float


def _wav(audio: np.ndarray, rate: int) -> bytes:
    return encode(np.atleast_2d(audio), rate, "wav")


def synth_song(out_dir: Path) -> Path:
    """A song-shaped synthetic song with its mixture, instrumental and vocals stems (bench.synth)."""
    from bench import synth

    rng = np.random.default_rng(SYNTH_SEED)
    pool = synth.LinePool.of([*synth.LYRIC_LINES, *synth.SHORT_LINES, *synth.LONG_LINES])
    plan = synth.plan_song(rng, pool, (SYNTH_VOCALS_DB, False, False), SYNTH_MAX_SECONDS)
    stems = ("mixture", "instrumental", "vocals")
    synth.render_song(out_dir, plan.sections, SYNTH_SEED, plan.bpm, plan.how, stems=stems, audio_format="wav")
    return out_dir


def separated_vocals(mixture: Path, model: Path) -> bytes:
    """The vocals Spleeter separates from a mixture, as the separation stage hands them on (WAV)."""
    from roar.audio import match_channels, resample
    from services.separation.separate import separate_audio
    from services.separation.spleeter import SpleeterSeparator

    separator = SpleeterSeparator(model)
    audio, rate = sf.read(mixture, dtype="float32", always_2d=True)
    audio = match_channels(resample(audio.T, rate, separator.sample_rate), separator.channels)
    return _wav(separate_audio(separator, audio)["vocals"], separator.sample_rate)


def inputs(song_dir: Path, separation_model: Path) -> list[Input]:
    """The inputs, in the order of the table."""

    def file(kind: str, name: str, path: Path) -> Input:
        return Input(kind, name, path.read_bytes(), sf.info(path).duration)

    speech_files = sorted((SHARED / "audio" / "librivox").glob("*.wav"))
    pieces, rate = [], 16_000
    for path in speech_files:
        audio, rate = sf.read(path, dtype="float32")
        pieces += [audio, np.zeros(int(SPEECH_GAP_SECONDS * rate), dtype=np.float32)]
    speech = np.concatenate(pieces[:-1])
    silence = np.zeros((2, int(SILENCE_SECONDS * 44_100)), dtype=np.float32)
    song_seconds = sf.info(song_dir / "mixture.wav").duration
    return [
        file("instrumental", "synthetic band (instrumental stem)", song_dir / "instrumental.wav"),
        file("instrumental", "MUSDB preview mixture, as given", MUSDB / "mixture.flac"),
        Input("spoken", f"LibriVox, {len(speech_files)} utterances", _wav(speech, rate), len(speech) / rate),
        file("sung", "synthetic vocals (vocals stem)", song_dir / "vocals.wav"),
        file("sung", "MUSDB preview vocals stem", MUSDB / "vocals.flac"),
        Input(
            "separated",
            "synthetic song, Spleeter vocals",
            separated_vocals(song_dir / "mixture.wav", separation_model),
            song_seconds,
        ),
        Input(
            "separated",
            "MUSDB preview, Spleeter vocals",
            separated_vocals(MUSDB / "mixture.flac", separation_model),
            sf.info(MUSDB / "mixture.flac").duration,
        ),
        Input(
            "silent", f"{SILENCE_SECONDS:.0f} s of digital silence", _wav(silence, 44_100), SILENCE_SECONDS
        ),
    ]


def _warm_up_clip() -> bytes:
    """A second of speech, so that the first timed call pays no first-call costs."""
    path = sorted((SHARED / "audio" / "librivox").glob("*.wav"))[0]
    audio, rate = sf.read(path, dtype="float32", frames=16_000)
    return _wav(audio, rate)


class Service(StageService):
    """The transcription service as a subprocess on a free loopback port (a `with` block)."""

    def __init__(self, model: Path, threads: int, log_path: Path) -> None:
        env = {"ROAR_TORCH_THREADS": str(threads), "ROAR_TRANSCRIPTION_MODEL": str(model)}
        super().__init__("services.transcription.server", env, log_path)

    def transcribe(self, data: bytes, timeout: float) -> int | None:
        """The words transcribed, or None when the call ran past `timeout` seconds."""
        options = transcription_pb2.TranscriptionOptions()  # the default: the model the service started with
        with grpc.insecure_channel(self.address, options=CHANNEL_OPTIONS) as channel:
            stub = transcription_pb2_grpc.TranscriptionStub(channel)
            requests = request_stream(transcription_pb2.TranscribeRequest, options, "audio", data)
            try:
                responses = list(stub.Transcribe(requests, timeout=timeout))
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    return None
                raise
        transcript = responses[-1].transcript
        return sum(len(segment.words) for segment in transcript.segments)


def measure(service: Service, items: list[Input], timeout: float) -> list[dict]:
    rows = []
    for item in items:
        started = time.monotonic()
        words = service.transcribe(item.data, timeout)
        seconds = time.monotonic() - started
        rows.append(
            {
                "kind": item.kind,
                "input": item.name,
                "audio_seconds": round(item.seconds, 1),
                "seconds": round(seconds, 1),
                "ratio": round(seconds / item.seconds, 2),
                "words": words,
                "timed_out": words is None,
            }
        )
        print(
            f"{item.kind}: {item.name}: {seconds:.1f} s for {item.seconds:.1f} s", file=sys.stderr, flush=True
        )
        if words is None:  # the service may still be decoding it: start afresh
            service.stop()
            service.start()
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| input kind | input | transcription s | audio s | ratio (s per s) | words |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        prefix = "> " if row["timed_out"] else ""
        words = "—" if row["words"] is None else str(row["words"])
        lines.append(
            f"| {row['kind']} | {row['input']} | {prefix}{row['seconds']:.1f} | {row['audio_seconds']:.1f} "
            f"| {prefix}{row['ratio']:.2f} | {words} |"
        )
    worst = max(rows, key=lambda row: row["ratio"])
    verdict = "yes" if worst["ratio"] <= 1.0 and not worst["timed_out"] else "no"
    lines += [
        "",
        f"Worst: {worst['kind']} ({worst['input']}), {worst['ratio']:.2f} s per second of audio. "
        f"Target: no input over 1x its duration; met: {verdict}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.transcription_cost", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--model", type=Path, default=SHARED / "models" / "whisper-tiny.en", help="a Whisper dir"
    )
    parser.add_argument(
        "--separation-model",
        type=Path,
        default=SHARED / "models" / "spleeter-2stems",
        help="a Spleeter dir, for the separated inputs",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the service (default 1)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds one input may take")
    parser.add_argument("--song", type=Path, help="a bench.synth song dir (default: make one)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="where results go")
    args = parser.parse_args(argv)
    for flag, path in (("--model", args.model), ("--separation-model", args.separation_model)):
        if not path.is_dir():
            raise SystemExit(f"no model dir at {path}: give {flag} DIR")
    import torch

    torch.set_num_threads(args.threads)  # the in-process Spleeter, as polite as the service
    with tempfile.TemporaryDirectory(prefix="roar-cost-") as tmp:
        work = Path(tmp)
        items = inputs(args.song or synth_song(work / "song"), args.separation_model)
        with Service(args.model.resolve(), args.threads, work / "service.log") as service:
            service.transcribe(_warm_up_clip(), args.timeout)
            rows = measure(service, items, args.timeout)
    markdown = (
        f"# Transcription cost\n\nModel `{args.model.name}`, {args.threads} torch thread(s), "
        f"timeout {args.timeout:.0f} s per input.\n\n{table(rows)}\n"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "transcription_cost.md").write_text(markdown)
    document = {"model": args.model.name, "threads": args.threads, "timeout": args.timeout, "rows": rows}
    (args.out / "transcription_cost.json").write_text(json.dumps(document, indent=2) + "\n")
    print(markdown)


if __name__ == "__main__":
    main()
