"""Clients of the three stage services: each call streams its input file in from disk, hands every
progress update to a callback and every other response to a Receiver as it arrives, and is made
again when it breaks, from where the Receiver's checkpoint says (a stage address may name several
replicas: the retry lands on a live one)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc

from roar import metrics
from roar.auth import bearer_metadata
from roar.channel_options import CHANNEL_OPTIONS
from roar.errors import RoarError
from roar.service import file_request_stream
from roar.v1 import (
    common_pb2,
    karaoke_pb2,
    karaoke_pb2_grpc,
    separation_pb2,
    separation_pb2_grpc,
    transcription_pb2,
    transcription_pb2_grpc,
)

# Backoff between tries of a stage call that broke: doubling from the first delay up to the cap.
RETRY_FIRST_DELAY = 0.5
RETRY_MAX_DELAY = 5.0
# Words in the details of an INTERNAL or UNKNOWN status that mean the transport broke (a stream
# reset, a closed connection) rather than that the stage answered with an error.
TRANSPORT_BREAKS = ("RST_STREAM", "Stream removed", "Socket closed", "Connection reset", "GOAWAY")
OnProgress = Callable[[common_pb2.StageProgress], Awaitable[None]]
# Opens one try of a stage call with the time it has left: its response stream.
OpenCall = Callable[[float], Any]


class StageFailed(RoarError):
    """A stage call ended with an error status; `code` keeps the stage's status name."""

    def __init__(self, code: str, message: str, *, broken: bool = False, answered: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.broken = broken  # the connection or stream broke: the stage did not answer this
        self.answered = answered  # the stage had sent something before it failed


class Receiver(Protocol):
    """Takes a stage call's responses that are not progress, across the tries of one call."""

    def start_try(self) -> None:
        """Called before each try: forgets what a broken try half-delivered."""

    async def receive(self, response: Any) -> None:
        """Keeps one response; raises StageFailed when it cannot (a full disk, a bad response)."""

    def kept(self) -> int:
        """Units of work kept across tries (windows); grows as a try makes progress."""

    def retry_note(self) -> str:
        """Where the next try goes on from, for the retry's progress message ('' when from the
        start)."""


class WindowReceiver(Receiver, Protocol):
    """A Receiver that keeps windows: each try asks for the windows from first_window on."""

    @property
    def first_window(self) -> int:
        """The first window not kept."""


class PassageReceiver(Receiver, Protocol):
    """A Receiver that keeps passages: each try sends them back as options.done."""

    @property
    def done(self) -> list[transcription_pb2.Passage]:
        """The passages kept, in order."""


class VocalsSource(Protocol):
    def requests(self, options: transcription_pb2.TranscriptionOptions) -> AsyncIterator[Any]:
        """One try's request stream: the options, then the vocals from their start."""


@dataclass(frozen=True)
class StageService:
    name: str
    address: str
    setting: str  # the environment variable that points at it


def stage_channel(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
    """The orchestrator's channel to one stage: TLS when credentials are given (stage_tls_*)."""
    # round_robin: a stage address that resolves to several replicas (a headless Kubernetes
    # Service) spreads calls over all of them instead of pinning one.
    options = [*CHANNEL_OPTIONS, ("grpc.lb_policy_name", "round_robin")]
    if credentials is not None:
        return grpc.aio.secure_channel(address, credentials, options=options)
    return grpc.aio.insecure_channel(address, options=options)


class StageClients:
    def __init__(
        self,
        separation: str,
        transcription: str,
        karaoke: str,
        credentials: grpc.ChannelCredentials | None = None,
        stage_key: str = "",
        *,
        retry_seconds: float,
    ) -> None:
        # Presented on every stage call: stages beyond loopback refuse calls without it.
        self._metadata = bearer_metadata(stage_key)
        self._retry_seconds = retry_seconds
        self.separation = StageService("separation", separation, "ROAR_SEPARATION_ADDR")
        self.transcription = StageService("transcription", transcription, "ROAR_TRANSCRIPTION_ADDR")
        self.karaoke = StageService("karaoke", karaoke, "ROAR_KARAOKE_ADDR")
        self._channels = {
            s.name: stage_channel(s.address, credentials)
            for s in (self.separation, self.transcription, self.karaoke)
        }

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()

    async def _call(
        self,
        service: StageService,
        open_call: OpenCall,
        receiver: Receiver,
        on_progress: OnProgress,
        timeout: float,
    ) -> None:
        """Runs one streaming stage call, handing its responses to `receiver`.

        A call that broke (the stage crashed, is stopping, restarting or not up yet; a stream
        reset) is made again, with backoff, each retry reported through `on_progress`, from what
        the receiver kept, until the stage has been failing for `retry_seconds`; then the stage
        fails with UNAVAILABLE. A try that kept more work, or ran for a whole retry window, starts
        a fresh window. The stage's own answers (bad input, cancelled, the job's deadline) and the
        receiver's refusals are final."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        give_up_at: float | None = None
        delay = RETRY_FIRST_DELAY
        attempt = 1
        while True:
            started = loop.time()
            if started >= deadline:
                raise StageFailed(
                    "DEADLINE_EXCEEDED", f"the {service.name} stage ran past the job's time limit"
                )
            kept_before = receiver.kept()
            receiver.start_try()
            try:
                await self._call_once(service, open_call(deadline - started), receiver, on_progress)
                return
            except StageFailed as exc:
                if not exc.broken:
                    raise
                now = loop.time()
                progressed = receiver.kept() > kept_before
                if give_up_at is None or progressed or now - started >= self._retry_seconds:
                    give_up_at = now + self._retry_seconds
                    delay = RETRY_FIRST_DELAY
                if now >= give_up_at:
                    raise StageFailed(
                        "UNAVAILABLE",
                        f"{exc.message}; gave up after retrying for {self._retry_seconds:g} s "
                        "(ROAR_STAGE_RETRY_SECONDS)",
                    ) from exc
                attempt += 1
                metrics.stage_retried(service.name, failover=exc.answered)
                what = "the service restarted" if exc.answered else "the service is not up"
                note = receiver.retry_note()
                await on_progress(
                    common_pb2.StageProgress(
                        percent=0.0,
                        message=f"{service.name}: {what}; retrying (attempt {attempt}){note}",
                    )
                )
                await asyncio.sleep(max(0.0, min(delay, give_up_at - now, deadline - now)))
                delay = min(2 * delay, RETRY_MAX_DELAY)

    async def _call_once(
        self, service: StageService, call: Any, receiver: Receiver, on_progress: OnProgress
    ) -> None:
        answered = False
        try:
            async for response in call:
                answered = True
                if response.WhichOneof("response") == "progress":
                    await on_progress(response.progress)
                else:
                    await receiver.receive(response)
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
            detail = exc.details() or code
            broken = exc.code() == grpc.StatusCode.UNAVAILABLE or (
                exc.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
                and any(word in detail for word in TRANSPORT_BREAKS)
            )
            if broken:
                detail = (
                    f"the {service.name} service at {service.address} is unavailable ({detail}); "
                    f"start it or point {service.setting} at it"
                )
            elif exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                detail = f"the {service.name} service refused the stage key: set one ROAR_STAGE_KEY on both"
            elif exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                detail = f"the {service.name} stage ran past the job's time limit"
            raise StageFailed(code, detail, broken=broken, answered=answered) from exc
        finally:
            call.cancel()  # a receiver that refused a response ends the call (no-op once it ended)

    async def separate(
        self,
        song: Path,
        options: separation_pb2.SeparationOptions,
        receiver: WindowReceiver,
        on_progress: OnProgress,
        timeout: float,
    ) -> None:
        """Separates the song file; every try asks for the windows from the first one the
        receiver has not kept."""
        stub = separation_pb2_grpc.SeparationStub(self._channels["separation"])

        def open_call(remaining: float) -> Any:
            asked = separation_pb2.SeparationOptions()
            asked.CopyFrom(options)
            asked.first_window = receiver.first_window
            requests = file_request_stream(separation_pb2.SeparateRequest, asked, "audio", song)
            return stub.Separate(requests, timeout=remaining, metadata=self._metadata)

        await self._call(self.separation, open_call, receiver, on_progress, timeout)

    async def transcribe(
        self,
        vocals: VocalsSource,
        options: transcription_pb2.TranscriptionOptions,
        receiver: PassageReceiver,
        on_progress: OnProgress,
        timeout: float,
    ) -> None:
        """Transcribes the vocals; every try streams them from the start and sends the passages the
        receiver kept as options.done."""
        stub = transcription_pb2_grpc.TranscriptionStub(self._channels["transcription"])

        def open_call(remaining: float) -> Any:
            asked = transcription_pb2.TranscriptionOptions()
            asked.CopyFrom(options)
            asked.done.extend(receiver.done)
            return stub.Transcribe(vocals.requests(asked), timeout=remaining, metadata=self._metadata)

        await self._call(self.transcription, open_call, receiver, on_progress, timeout)

    async def build_karaoke(
        self, options: karaoke_pb2.KaraokeOptions, receiver: Receiver, on_progress: OnProgress, timeout: float
    ) -> None:
        """Builds the lyric files; their FileChunks go to `receiver`."""
        stub = karaoke_pb2_grpc.KaraokeStub(self._channels["karaoke"])
        request = karaoke_pb2.BuildRequest(options=options)

        def open_call(remaining: float) -> Any:
            return stub.Build(request, timeout=remaining, metadata=self._metadata)

        await self._call(self.karaoke, open_call, receiver, on_progress, timeout)

    async def render_video(
        self,
        options: karaoke_pb2.VideoOptions,
        audio: Path,
        receiver: Receiver,
        on_progress: OnProgress,
        timeout: float,
    ) -> None:
        """Renders karaoke.mp4 over the audio file; its FileChunks go to `receiver`. Each try
        sends the options, waits until the service accepts them (its first progress message)
        and only then streams the audio, so that a refusal arrives as the service's status."""
        stub = karaoke_pb2_grpc.KaraokeStub(self._channels["karaoke"])
        accepted = asyncio.Event()

        async def requests() -> AsyncIterator[karaoke_pb2.RenderVideoRequest]:
            stream = file_request_stream(karaoke_pb2.RenderVideoRequest, options, "audio", audio)
            yield await anext(stream)  # the options
            await accepted.wait()
            async for request in stream:
                yield request

        def open_call(remaining: float) -> Any:
            nonlocal accepted
            accepted = asyncio.Event()
            return stub.RenderVideo(requests(), timeout=remaining, metadata=self._metadata)

        async def progress(update: common_pb2.StageProgress) -> None:
            accepted.set()
            await on_progress(update)

        await self._call(self.karaoke, open_call, receiver, progress, timeout)
