"""The Transcription gRPC service: vocals chunks in; progress, then word-timed lyrics out: the user's
lyrics timed by forced alignment when the options carry them, else the model's transcription.
`python -m services.transcription.server [--port N] [--host H] [--model M]`."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

import grpc

from roar.auth import stage_interceptors
from roar.catalog import transcription_catalog
from roar.config import Settings, port_of, torch_device
from roar.errors import BadInput
from roar.models import ModelCache
from roar.progress import ProgressCallback, StageRun
from roar.service import abort_with, options_and_file, progress_responses, serve, setup_logging
from roar.text import LANGUAGE_RULE, is_language_code
from roar.v1 import common_pb2, transcription_pb2, transcription_pb2_grpc
from services.transcription.transcribe import transcribe_song
from services.transcription.transcriber import Transcriber, load_transcriber

SERVICE_NAME = transcription_pb2.DESCRIPTOR.services_by_name["Transcription"].full_name


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
        # The vocals wait on disk and are decoded block by block: memory does not grow with the song.
        async with options_and_file(request_iterator, context, "options", "audio") as (options, vocals):
            if not is_language_code(options.language):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, LANGUAGE_RULE)
            try:
                model = self._transcribers.catalog.name_for(options.model)
            except BadInput as exc:
                await abort_with(context, exc)

            def work(progress: ProgressCallback) -> common_pb2.Transcript:
                return transcribe_song(vocals, options, lambda p: self._transcribers.get(model, p), progress)

            run = StageRun(work, slots=self._slots)
            async for response in progress_responses(run, context, transcription_pb2.TranscribeResponse):
                yield response
        yield transcription_pb2.TranscribeResponse(transcript=run.result())


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
        )
    )


if __name__ == "__main__":
    main()
