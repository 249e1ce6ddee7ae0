"""The Separation gRPC service: song chunks in; progress, stem chunks and a result out."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

import grpc

from roar import audio
from roar.auth import stage_interceptors
from roar.catalog import separation_catalog
from roar.config import Settings, port_of, torch_device
from roar.errors import BadInput
from roar.models import ModelCache
from roar.progress import ProgressCallback, StageRun
from roar.service import (
    abort_with,
    file_chunks,
    progress_responses,
    read_options_and_data,
    serve,
    setup_logging,
)
from roar.v1 import separation_pb2, separation_pb2_grpc
from services.separation.backends import load_separator
from services.separation.separate import SeparationOutput, separate_song
from services.separation.separator import Separator

SERVICE_NAME = separation_pb2.DESCRIPTOR.services_by_name["Separation"].full_name


class SeparationServicer(separation_pb2_grpc.SeparationServicer):
    def __init__(self, separators: ModelCache[Separator]) -> None:
        self._separators = separators
        # One separation at a time: a single one already keeps every core busy.
        self._slots = asyncio.Semaphore(1)

    async def Separate(
        self,
        request_iterator: AsyncIterator[separation_pb2.SeparateRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[separation_pb2.SeparateResponse]:
        options, data = await read_options_and_data(request_iterator, context, "options", "audio")
        try:
            model = self._separators.catalog.name_for(options.model)
            fmt = audio.format_name(options.format)
        except BadInput as exc:
            await abort_with(context, exc)

        def work(progress: ProgressCallback) -> SeparationOutput:
            separator = self._separators.get(model, progress)
            return separate_song(separator, data, options.all_stems, fmt, progress)

        run = StageRun(work, slots=self._slots)
        async for response in progress_responses(run, context, separation_pb2.SeparateResponse):
            yield response
        output = run.result()
        for name, stem in output.stems.items():
            for chunk in file_chunks(name, stem):
                yield separation_pb2.SeparateResponse(stem=chunk)
        result = separation_pb2.SeparationResult(model=model, stems=list(output.stems), input=output.input)
        yield separation_pb2.SeparateResponse(result=result)


def main() -> None:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(description="Roar separation service (Demucs / Spleeter)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in containers)")
    parser.add_argument(
        "--port", type=int, default=port_of(settings.separation_addr), help="port to listen on"
    )
    parser.add_argument(
        "--model",
        default=settings.separation_model,
        help="default model, a name from ROAR_SEPARATION_MODELS or a source (ROAR_SEPARATION_MODEL)",
    )
    args = parser.parse_args()
    setup_logging("separation")
    catalog = separation_catalog(settings, args.model)
    guard = stage_interceptors(settings, "separation", args.host)  # before any model loads
    device = torch_device(settings)
    separators: ModelCache[Separator] = ModelCache(
        lambda name, source: load_separator(source, device), catalog
    )

    def register(server: grpc.aio.Server) -> None:
        separation_pb2_grpc.add_SeparationServicer_to_server(SeparationServicer(separators), server)

    async def warm_up() -> None:
        await asyncio.to_thread(separators.warm_up)

    asyncio.run(
        serve(
            "separation",
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
