"""Seconds each stage takes on this machine for one song, through the real services.

    python -m bench.stage_times [--lines 10] [--separation-model M] [--transcription-model M]

Without model flags it measures two set-ups: a full-size HTDemucs (the pretrained htdemucs'
architecture with random weights: the same compute, since no pretrained Demucs weights can be had
here) and the Spleeter 2-stem model, both with Whisper tiny.en from ../shared, on a synthetic
song (bench.synth: sung lines over drums, bass and chords; 10 lines is about a minute). Stage times come
from the job's own events (stage start to stage done), so they include streaming the audio in
and out of each service.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import soundfile as sf

from bench.synth import LYRIC_LINES, make_song
from roar import client
from roar.v1 import orchestrator_pb2 as pb
from roar.v1 import orchestrator_pb2_grpc as pb_grpc
from tests.support.suite import Suite
from tests.support.tiny_demucs import HTDEMUCS_KWARGS, build_tiny_demucs

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "models"
STAGES = {
    pb.STAGE_SEPARATION: "separation",
    pb.STAGE_TRANSCRIPTION: "transcription",
    pb.STAGE_KARAOKE: "karaoke",
}


async def time_job(address: str, song: Path) -> dict[str, float]:
    async with client.channel(address) as channel:
        stub = pb_grpc.OrchestratorStub(channel)
        upload = await client.upload_file(stub, song)
        events = [e async for e in client.process(stub, upload.upload_id, pb.JobOptions())]
    if events[-1].state != pb.JOB_STATE_SUCCEEDED:
        raise SystemExit(f"job failed: {events[-1]}")
    times = {}
    for stage, name in STAGES.items():
        stamps = [e.timestamp.ToMilliseconds() / 1000 for e in events if e.stage == stage]
        times[name] = stamps[-1] - stamps[0]
    return times


def measure(label: str, env: dict[str, str], song: Path, seconds: float, work: Path) -> None:
    suite = Suite(work / label / "data", {"ROAR_TORCH_THREADS": "0", **env}, work / f"{label}.log")
    started = time.monotonic()
    suite.start(timeout=600)
    print(f"{label}: services healthy (models loaded) in {time.monotonic() - started:.1f} s")
    try:
        asyncio.run(time_job(suite.address, song))  # warm-up: first-call costs stay out of the figures
        times = asyncio.run(time_job(suite.address, song))
    finally:
        suite.stop()
    total = sum(times.values())
    cells = "  ".join(f"{name} {t:6.1f} s ({t / seconds:.2f}x)" for name, t in times.items())
    print(f"{label}: {cells}  total {total:.1f} s for {seconds:.0f} s of audio")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=10, help="sung lines in the synthetic song")
    parser.add_argument("--separation-model")
    parser.add_argument("--transcription-model", default=str(SHARED / "whisper-tiny.en"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_song(work / "song", list(LYRIC_LINES[: args.lines]), seed=7, stems=("mixture",))
        song = work / "song" / "mixture.wav"
        seconds = sf.info(song).duration
        if args.separation_model:
            setups = {"custom": args.separation_model}
        else:
            setups = {
                "htdemucs-size": build_tiny_demucs(work / "demucs", "htdemucs_random", HTDEMUCS_KWARGS),
                "spleeter": str(SHARED / "spleeter-2stems"),
            }
        for label, model in setups.items():
            env = {"ROAR_SEPARATION_MODEL": model, "ROAR_TRANSCRIPTION_MODEL": args.transcription_model}
            measure(label, env, song, seconds, work)


if __name__ == "__main__":
    main()
