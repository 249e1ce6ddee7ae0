"""The Transcription gRPC service: vocals chunks in; progress, then word-timed lyrics out: the user's
lyrics timed by forced alignment when the options carry them, else the model's transcription.
`python -m services.transcription.server [--port N] [--host H] [--model M]`."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc
import numpy as np

from roar.audio import LIMIT_SETTING, max_audio_seconds, max_encoded_bytes, mono_blocks
from roar.auth import stage_interceptors
from roar.catalog import transcription_catalog
from roar.config import Settings, port_of, torch_device
from roar.errors import BadInput, Cancelled, DiskFull, ResourceExhausted, RoarError, is_disk_full
from roar.metrics import WINDOWS_PROCESSED
from roar.models import ModelCache
from roar.progress import ProgressCallback, StageRun
from roar.service import abort_with, options_and_file, progress_responses, serve, setup_logging, with_first
from roar.text import LANGUAGE_RULE, is_language_code
from roar.v1 import common_pb2, transcription_pb2, transcription_pb2_grpc
from services.transcription import vad
from services.transcription.transcribe import check_done, transcribe_song
from services.transcription.transcriber import Transcriber, load_transcriber
from services.transcription.vocals import PcmSpool, pcm_blocks

SERVICE_NAME = transcription_pb2.DESCRIPTOR.services_by_name["Transcription"].full_name


# Raw samples a call may send: 8-192 kHz (as decoded files), 1 to 8 channels.
PCM_RATES = (8_000, 192_000)
MAX_PCM_CHANNELS = 8


class TranscriptionServicer(transcription_pb2_grpc.TranscriptionServicer):
    def __init__(self, transcribers: ModelCache[Transcriber]) -> None:
        self._transcribers = transcribers
        # One transcription at a time: a single one already keeps every core busy.
        self._slots = asyncio.Semaphore(1)

    async def Transcribe(
        self,
        request_iterator: AsyncIterator[transcription_pb2.TranscribeRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[transcription_pb2.TranscribeResponse]:
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None or first.WhichOneof("request") != "options":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must hold the options")
        options = first.options
        if not is_language_code(options.language):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, LANGUAGE_RULE)
        try:
            model = self._transcribers.catalog.name_for(options.model)
            check_done(options.done)
        except BadInput as exc:
            await abort_with(context, exc)
        if options.HasField("pcm"):
            responses = self._transcribe_pcm(options, requests, context, model)
        else:
            responses = self._transcribe_file(options, requests, context, model)
        async for response in responses:
            yield response

    async def _transcribe_file(
        self,
        options: transcription_pb2.TranscriptionOptions,
        requests: AsyncIterator[transcription_pb2.TranscribeRequest],
        context: grpc.aio.ServicerContext,
        model: str,
    ) -> AsyncIterator[transcription_pb2.TranscribeResponse]:
        # The vocals wait on disk and are decoded block by block: memory does not grow with the song.
        async with options_and_file(
            with_first(transcription_pb2.TranscribeRequest(options=options), requests),
            context,
            "options",
            "audio",
        ) as (_, vocals):

            def blocks(waiting: Callable[[], None]) -> Iterator[np.ndarray]:
                return mono_blocks(vocals, vad.SAMPLE_RATE)

            async for response in self._run(options, blocks, context, model):
                yield response

    async def _transcribe_pcm(
        self,
        options: transcription_pb2.TranscriptionOptions,
        requests: AsyncIterator[transcription_pb2.TranscribeRequest],
        context: grpc.aio.ServicerContext,
        model: str,
    ) -> AsyncIterator[transcription_pb2.TranscribeResponse]:
        """Raw samples are transcribed as they arrive: a passage may be sent back before the last
        sample is in."""
        rate, channels = options.pcm.sample_rate, options.pcm.channels
        if not PCM_RATES[0] <= rate <= PCM_RATES[1] or not 1 <= channels <= MAX_PCM_CHANNELS:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"raw samples come at {PCM_RATES[0]}-{PCM_RATES[1]} Hz in 1-{MAX_PCM_CHANNELS} channels",
            )
        with tempfile.TemporaryDirectory(prefix="roar-input-") as directory:
            spool = PcmSpool(Path(directory), rate, channels)
            receiving = asyncio.create_task(_receive_pcm(requests, spool))
            try:
                async for response in self._run(
                    options, lambda waiting: pcm_blocks(spool, waiting), context, model
                ):
                    yield response
            finally:
                receiving.cancel()

    async def _run(
        self,
        options: transcription_pb2.TranscriptionOptions,
        blocks: Callable[[Callable[[], None]], Iterator[np.ndarray]],
        context: grpc.aio.ServicerContext,
        model: str,
    ) -> AsyncIterator[transcription_pb2.TranscribeResponse]:
        """Runs the transcription; its progress, and each passage as soon as it is transcribed."""
        loop = asyncio.get_running_loop()
        passages: asyncio.Queue[transcription_pb2.Passage] = asyncio.Queue()

        def publish(passage: transcription_pb2.Passage) -> None:
            WINDOWS_PROCESSED.labels("transcription").inc()
            loop.call_soon_threadsafe(passages.put_nowait, passage)

        def work(progress: ProgressCallback) -> common_pb2.Transcript:
            reached = common_pb2.StageProgress(message="waiting for the vocals")

            def watched(percent: float, message: str = "") -> None:
                reached.percent, reached.message = percent, message
                progress(percent, message)

            def waiting() -> None:  # reports go on while the samples are slow to come
                progress(reached.percent, reached.message)

            transcriber = lambda p: self._transcribers.get(model, p)  # noqa: E731
            return transcribe_song(blocks(waiting), options, transcriber, watched, publish, model)

        run = StageRun(work, slots=self._slots)
        # A passage is published before the progress report that follows it: sending the waiting
        # passages first keeps them in order and as early as the reports.
        async for response in progress_responses(run, context, transcription_pb2.TranscribeResponse):
            while not passages.empty():
                yield transcription_pb2.TranscribeResponse(passage=passages.get_nowait())
            yield response
        while not passages.empty():
            yield transcription_pb2.TranscribeResponse(passage=passages.get_nowait())
        yield transcription_pb2.TranscribeResponse(transcript=run.result())


async def _receive_pcm(requests: AsyncIterator[transcription_pb2.TranscribeRequest], spool: PcmSpool) -> None:
    """Spools the samples of a call as they arrive; what is wrong with them ends the spool with the
    error the transcription then fails with."""
    limit = max_encoded_bytes(max_audio_seconds())
    received = 0
    try:
        async for request in requests:
            if request.WhichOneof("request") != "audio":
                raise BadInput("after the options, every message must hold samples")
            received += len(request.audio)
            if received > limit:
                raise ResourceExhausted(f"more samples than any song this service takes ({LIMIT_SETTING})")
            spool.write(request.audio)
    except RoarError as exc:
        spool.end(exc)
    except OSError as exc:
        spool.end(DiskFull("the vocals") if is_disk_full(exc) else exc)
    except asyncio.CancelledError:
        spool.end(Cancelled())
        raise
    except grpc.RpcError as exc:  # the call broke while its samples came
        spool.end(Cancelled(f"the call ended while its samples came: {exc.code()}"))
    else:
        spool.end()


def main() -> None:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(
        description="Roar transcription service (Whisper or Gemma 3n, word times)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in containers)")
    parser.add_argument(
        "--port", type=int, default=port_of(settings.transcription_addr), help="port to listen on"
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=settings.metrics_port,
        help="HTTP port of /metrics (ROAR_METRICS_PORT)",
    )
    parser.add_argument(
        "--model",
        default=settings.transcription_model,
        help="default model, a name from ROAR_TRANSCRIPTION_MODELS or a source: a hub id or a local dir "
        "(ROAR_TRANSCRIPTION_MODEL)",
    )
    args = parser.parse_args()
    setup_logging("transcription")
    catalog = transcription_catalog(settings, args.model)
    guard = stage_interceptors(settings, "transcription", args.host)  # before any model loads
    device = torch_device(settings)
    transcribers: ModelCache[Transcriber] = ModelCache(
        lambda name, source: load_transcriber(source, device, name), catalog
    )

    def register(server: grpc.aio.Server) -> None:
        transcription_pb2_grpc.add_TranscriptionServicer_to_server(
            TranscriptionServicer(transcribers), server
        )

    async def warm_up() -> None:
        await asyncio.to_thread(transcribers.warm_up)

    asyncio.run(
        serve(
            "transcription",
            args.port,
            register,
            [SERVICE_NAME],
            warm_up=warm_up,
            host=args.host,
            interceptors=guard,
            metrics_port=args.metrics_port,
        )
    )


if __name__ == "__main__":
    main()
