"""The karaoke gRPC service: `python -m services.karaoke.server [--port N] [--host H]`."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import soundfile as sf

from roar.auth import stage_interceptors
from roar.config import Settings, port_of
from roar.errors import BadInput
from roar.progress import ProgressCallback, StageRun, no_progress
from roar.service import (
    CHUNK_BYTES,
    abort_with,
    file_chunks,
    options_and_file,
    progress_responses,
    serve,
    setup_logging,
    with_first,
)
from roar.v1 import common_pb2, karaoke_pb2, karaoke_pb2_grpc
from services.karaoke.build import build_karaoke
from services.karaoke.video import (
    DEFAULT_SIZE,
    MAX_SIDE,
    MIN_SIDE,
    VIDEO_UNAVAILABLE,
    render_video,
    video_available,
)

VIDEO_NAME = "karaoke.mp4"

SERVICE_NAME = karaoke_pb2.DESCRIPTOR.services_by_name["Karaoke"].full_name


class KaraokeServicer(karaoke_pb2_grpc.KaraokeServicer):
    def __init__(self, slots: asyncio.Semaphore) -> None:
        # No model: the work is CPU-bound text, so one build per core.
        self._slots = slots
        # One video at a time: ffmpeg's encoder keeps every core busy, and lyric files need not
        # wait behind a video.
        self._video_slots = asyncio.Semaphore(1)

    async def Build(
        self, request: karaoke_pb2.BuildRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[karaoke_pb2.BuildResponse]:
        if not request.HasField("options"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the request holds no options")
        options = request.options
        run = StageRun(lambda progress: build_karaoke(options, progress), slots=self._slots)
        async for response in progress_responses(run, context, karaoke_pb2.BuildResponse):
            yield response
        for name, data in run.result().items():
            for chunk in file_chunks(name, data):
                yield karaoke_pb2.BuildResponse(file=chunk)

    async def RenderVideo(
        self,
        request_iterator: AsyncIterator[karaoke_pb2.RenderVideoRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[karaoke_pb2.BuildResponse]:
        """The options are checked before any audio is read, and a first progress message says
        they were accepted: a caller that waits for it before sending the audio gets a refusal
        as its status (a refusal while the caller is still writing reaches gRPC's Python client
        as an INTERNAL error instead)."""
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None or first.WhichOneof("request") != "options":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must hold the options")
        if not video_available():
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, VIDEO_UNAVAILABLE)
        try:
            size = _frame_size(first.options)
        except BadInput as exc:
            await abort_with(context, exc)
        yield karaoke_pb2.BuildResponse(
            progress=common_pb2.StageProgress(percent=0.0, message="receiving the instrumental")
        )
        async with options_and_file(with_first(first, requests), context, "options", "audio") as (
            options,
            audio,
        ):
            lyrics = karaoke_pb2.KaraokeOptions()
            lyrics.CopyFrom(options.karaoke)
            del lyrics.formats[:]
            lyrics.formats.append(common_pb2.LYRICS_FORMAT_ASS)
            try:
                lyrics.duration_seconds = lyrics.duration_seconds or _audio_seconds(audio)
            except BadInput as exc:
                await abort_with(context, exc)
            video = audio.with_name(VIDEO_NAME)

            def work(progress: ProgressCallback) -> None:
                ass_text = build_karaoke(lyrics, no_progress)["lyrics.ass"].decode()
                render_video(ass_text, audio, video, lyrics.duration_seconds, size, progress)

            run = StageRun(work, slots=self._video_slots)
            async for response in progress_responses(run, context, karaoke_pb2.BuildResponse):
                yield response
            for chunk in _file_chunks(video):
                yield karaoke_pb2.BuildResponse(file=chunk)


def _frame_size(options: karaoke_pb2.VideoOptions) -> tuple[int, int]:
    """The asked frame size (0 x 0: DEFAULT_SIZE); BadInput unless both sides are even and in range."""
    if not options.width and not options.height:
        return DEFAULT_SIZE
    sides = (options.width, options.height)
    if not all(MIN_SIDE <= side <= MAX_SIDE and side % 2 == 0 for side in sides):
        raise BadInput(
            f"width and height must be even pixel counts from {MIN_SIDE} to {MAX_SIDE} (both 0: 1280x720)"
        )
    return sides


def _audio_seconds(audio: Path) -> float:
    """The audio's length from its header, for a request that does not say it."""
    try:
        return sf.info(str(audio)).duration
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise BadInput("duration_seconds is needed for audio that is not wav, flac, ogg or mp3") from exc


def _file_chunks(path: Path) -> Iterator[common_pb2.FileChunk]:
    """A file on disk as FileChunks read one at a time (a video can be large)."""
    size = path.stat().st_size
    sent = 0
    with path.open("rb") as file:
        while True:
            piece = file.read(CHUNK_BYTES)
            sent += len(piece)
            yield common_pb2.FileChunk(name=path.name, data=piece, eof=sent >= size)
            if sent >= size:
                return


def main(argv: list[str] | None = None) -> None:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(description="Roar karaoke service: the lyric files")
    parser.add_argument(
        "--port",
        type=int,
        default=port_of(settings.karaoke_addr),
        help="from ROAR_KARAOKE_ADDR",
    )
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to listen on every interface")
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=settings.metrics_port,
        help="HTTP port of /metrics (ROAR_METRICS_PORT)",
    )
    args = parser.parse_args(argv)
    setup_logging("karaoke")
    guard = stage_interceptors(settings, "karaoke", args.host)  # before any model loads
    slots = asyncio.Semaphore(os.cpu_count() or 1)

    def register(server: grpc.aio.Server) -> None:
        karaoke_pb2_grpc.add_KaraokeServicer_to_server(KaraokeServicer(slots), server)

    asyncio.run(
        serve(
            "karaoke",
            args.port,
            register,
            [SERVICE_NAME],
            host=args.host,
            interceptors=guard,
            metrics_port=args.metrics_port,
        )
    )


if __name__ == "__main__":
    main()
