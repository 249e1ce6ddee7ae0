"""The karaoke gRPC service: `python -m services.karaoke.server [--port N] [--host H]`."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import AsyncIterator

import grpc

from roar.auth import stage_interceptors
from roar.config import Settings, port_of
from roar.progress import StageRun
from roar.service import file_chunks, progress_responses, serve, setup_logging
from roar.v1 import karaoke_pb2, karaoke_pb2_grpc
from services.karaoke.build import build_karaoke

SERVICE_NAME = karaoke_pb2.DESCRIPTOR.services_by_name["Karaoke"].full_name


class KaraokeServicer(karaoke_pb2_grpc.KaraokeServicer):
    def __init__(self, slots: asyncio.Semaphore) -> None:
        # No model: the work is CPU-bound text, so one build per core.
        self._slots = slots

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
