"""The Separation gRPC service: song chunks in; progress, what the windows will hold, then the
stems window by window out. The song is spooled to disk and separated by
services.separation.separate on a worker thread, which hands each finished window over as it is
made; at most WINDOWS_IN_FLIGHT windows wait for the network, so memory stays bounded by the window."""

from __future__ import annotations

import argparse
import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import grpc

from roar.auth import stage_interceptors
from roar.catalog import separation_catalog
from roar.config import Settings, port_of, torch_device
from roar.errors import BadInput
from roar.metrics import WINDOWS_PROCESSED
from roar.models import ModelCache
from roar.progress import ProgressCallback, StageRun, check_cancelled
from roar.service import abort_with, options_and_file, serve, setup_logging
from roar.v1 import common_pb2, separation_pb2, separation_pb2_grpc
from services.separation.backends import load_separator
from services.separation.separate import SongPlan, SongWindow, separate_song
from services.separation.separator import Separator

SERVICE_NAME = separation_pb2.DESCRIPTOR.services_by_name["Separation"].full_name
# Finished windows the worker may get ahead of the network by.
WINDOWS_IN_FLIGHT = 2
# How long a server that got SIGTERM lets a running call finish its current window: one window of
# a bag of four htdemucs models on a busy CPU.
WINDOW_GRACE_SECONDS = 60.0
# Seconds between the worker's checks for a cancelled call while it waits to hand a window over.
HAND_OVER_POLL_SECONDS = 0.25


class _Done:
    """Put after the last item of a call's work."""


class SeparationServicer(separation_pb2_grpc.SeparationServicer):
    def __init__(self, separators: ModelCache[Separator], stopping: asyncio.Event | None = None) -> None:
        self._separators = separators
        # One separation at a time: a single one already keeps every core busy.
        self._slots = asyncio.Semaphore(1)
        # Set when the server stops (SIGTERM): calls end after their current window.
        self._stopping = stopping or asyncio.Event()

    async def Separate(
        self,
        request_iterator: AsyncIterator[separation_pb2.SeparateRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[separation_pb2.SeparateResponse]:
        async with options_and_file(request_iterator, context, "options", "audio") as (options, song):
            try:
                model = self._separators.catalog.name_for(options.model)
            except BadInput as exc:
                await abort_with(context, exc)
            loop = asyncio.get_running_loop()
            outputs: asyncio.Queue[Any] = asyncio.Queue()
            in_flight = threading.Semaphore(WINDOWS_IN_FLIGHT)

            def work(progress: ProgressCallback) -> None:
                separator = self._separators.get(model, progress)
                for item in separate_song(separator, song, options.all_stems, options.first_window, progress):
                    while isinstance(item, SongWindow) and not in_flight.acquire(
                        timeout=HAND_OVER_POLL_SECONDS
                    ):
                        check_cancelled()
                    loop.call_soon_threadsafe(outputs.put_nowait, item)

            pump = asyncio.ensure_future(_pump(StageRun(work, slots=self._slots), outputs))
            next_window = options.first_window
            planned = False  # windows are being made
            last_window = False  # the server is stopping: end after the window under way
            try:
                while True:
                    if self._stopping.is_set() and not last_window:
                        if not planned:
                            await _abort_stopping(context, next_window)
                        last_window = True
                    item = await self._next(outputs, wait_for_stop=not last_window)
                    if item is None:
                        continue  # the server began stopping
                    if isinstance(item, common_pb2.StageProgress):
                        yield separation_pb2.SeparateResponse(progress=item)
                    elif isinstance(item, SongPlan):
                        planned = True
                        yield separation_pb2.SeparateResponse(result=_result(model, item))
                    elif isinstance(item, SongWindow):
                        for stem, audio in item.stems.items():
                            window = separation_pb2.StemWindow(
                                index=item.index,
                                stem=stem,
                                start_frame=item.start_frame,
                                pcm=audio.T.astype("<f4").tobytes(),
                            )
                            yield separation_pb2.SeparateResponse(window=window)
                        in_flight.release()
                        WINDOWS_PROCESSED.labels("separation").inc()
                        next_window = item.index + 1
                        if self._stopping.is_set():
                            await _abort_stopping(context, next_window)
                    elif isinstance(item, _Done):
                        return
                    else:
                        await abort_with(context, item)
            finally:
                pump.cancel()

    async def _next(self, outputs: asyncio.Queue[Any], wait_for_stop: bool) -> Any:
        """The next output of the work; None if the server began stopping first."""
        if not wait_for_stop:
            return await outputs.get()
        getter = asyncio.ensure_future(outputs.get())
        stopping = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({getter, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if getter.done():
            return getter.result()
        getter.cancel()
        return None


def _take_a_place(in_flight: threading.Semaphore) -> None:
    """Waits (in the worker) until fewer than WINDOWS_IN_FLIGHT windows wait for the network."""
    while not in_flight.acquire(timeout=HAND_OVER_POLL_SECONDS):
        check_cancelled()


async def _pump(run: StageRun[None], outputs: asyncio.Queue[Any]) -> None:
    """The run's progress into outputs, then _Done or the exception the work raised."""
    try:
        async for update in run:
            outputs.put_nowait(update)
        run.result()
        outputs.put_nowait(_Done())
    except Exception as exc:
        outputs.put_nowait(exc)


async def _abort_stopping(context: grpc.aio.ServicerContext, next_window: int) -> None:
    await context.abort(
        grpc.StatusCode.UNAVAILABLE, f"the service is stopping; retry from window {next_window}"
    )


def _result(model: str, plan: SongPlan) -> separation_pb2.SeparationResult:
    return separation_pb2.SeparationResult(
        model=model,
        stems=plan.stems,
        input=plan.input,
        sample_rate=plan.sample_rate,
        channels=plan.channels,
        frames=plan.frames,
        window_count=plan.window_count,
    )


def main() -> None:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(description="Roar separation service (Demucs / Spleeter)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in containers)")
    parser.add_argument(
        "--port", type=int, default=port_of(settings.separation_addr), help="port to listen on"
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=settings.metrics_port,
        help="HTTP port of /metrics (ROAR_METRICS_PORT)",
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

    stopping = asyncio.Event()

    def register(server: grpc.aio.Server) -> None:
        servicer = SeparationServicer(separators, stopping)
        separation_pb2_grpc.add_SeparationServicer_to_server(servicer, server)

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
            stopping=stopping,
            grace=WINDOW_GRACE_SECONDS,
            metrics_port=args.metrics_port,
        )
    )


if __name__ == "__main__":
    main()
