"""Clients of the three stage services: each call streams the input file in, and hands every
progress update to a callback as it arrives."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from roar.auth import bearer_metadata
from roar.errors import RoarError
from roar.service import CHANNEL_OPTIONS, FileAssembler, request_stream
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


class StageFailed(RoarError):
    """A stage call ended with an error status; `code` keeps the stage's status name."""

    def __init__(self, code: str, message: str, *, broken: bool = False, answered: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.broken = broken  # the connection or stream broke: the stage did not answer this
        self.answered = answered  # the stage had sent something before it failed


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
        method: Callable[..., Any],
        requests: Iterator[Any],
        on_progress: OnProgress,
        timeout: float,
    ) -> list[Any]:
        """Runs one streaming stage call; returns the responses that are not progress.

        A call that broke (the stage crashed, is restarting or not up yet; a stream reset) is made
        again from the start, with backoff, each retry reported through `on_progress`, until the
        stage has been failing for `retry_seconds`; then the stage fails with UNAVAILABLE. A break
        after an attempt that ran a whole window starts a fresh window. The stage's own answers
        (bad input, cancelled, the job's deadline) are final."""
        requests = list(requests)
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
            try:
                return await self._call_once(service, method, requests, on_progress, deadline - started)
            except StageFailed as exc:
                if not exc.broken:
                    raise
                now = loop.time()
                if give_up_at is None or now - started >= self._retry_seconds:
                    give_up_at = now + self._retry_seconds
                    delay = RETRY_FIRST_DELAY
                if now >= give_up_at:
                    raise StageFailed(
                        "UNAVAILABLE",
                        f"{exc.message}; gave up after retrying for {self._retry_seconds:g} s "
                        "(ROAR_STAGE_RETRY_SECONDS)",
                    ) from exc
                attempt += 1
                what = "the service restarted" if exc.answered else "the service is not up"
                await on_progress(
                    common_pb2.StageProgress(
                        percent=0.0, message=f"{service.name}: {what}; retrying (attempt {attempt})"
                    )
                )
                await asyncio.sleep(max(0.0, min(delay, give_up_at - now, deadline - now)))
                delay = min(2 * delay, RETRY_MAX_DELAY)

    async def _call_once(
        self,
        service: StageService,
        method: Callable[..., Any],
        requests: list[Any],
        on_progress: OnProgress,
        timeout: float | None,
    ) -> list[Any]:
        outputs = []
        answered = False
        try:
            async for response in method(iter(requests), timeout=timeout, metadata=self._metadata):
                answered = True
                if response.WhichOneof("response") == "progress":
                    await on_progress(response.progress)
                else:
                    outputs.append(response)
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
        return outputs

    async def separate(
        self, song: bytes, options: separation_pb2.SeparationOptions, on_progress: OnProgress, timeout: float
    ) -> tuple[dict[str, bytes], separation_pb2.SeparationResult]:
        stub = separation_pb2_grpc.SeparationStub(self._channels["separation"])
        requests = request_stream(separation_pb2.SeparateRequest, options, "audio", song)
        outputs = await self._call(self.separation, stub.Separate, requests, on_progress, timeout)
        stems = FileAssembler()
        result = separation_pb2.SeparationResult()
        for response in outputs:
            if response.HasField("stem"):
                stems.add(response.stem)
            else:
                result = response.result
        return stems.files, result

    async def transcribe(
        self,
        vocals: bytes,
        options: transcription_pb2.TranscriptionOptions,
        on_progress: OnProgress,
        timeout: float,
    ) -> common_pb2.Transcript:
        stub = transcription_pb2_grpc.TranscriptionStub(self._channels["transcription"])
        requests = request_stream(transcription_pb2.TranscribeRequest, options, "audio", vocals)
        outputs = await self._call(self.transcription, stub.Transcribe, requests, on_progress, timeout)
        if not outputs:
            raise StageFailed("INTERNAL", "the transcription service sent no transcript")
        return outputs[-1].transcript

    async def build_karaoke(
        self,
        instrumental: bytes,
        options: karaoke_pb2.KaraokeOptions,
        on_progress: OnProgress,
        timeout: float,
    ) -> dict[str, bytes]:
        stub = karaoke_pb2_grpc.KaraokeStub(self._channels["karaoke"])
        requests = request_stream(karaoke_pb2.BuildRequest, options, "instrumental", instrumental)
        outputs = await self._call(self.karaoke, stub.Build, requests, on_progress, timeout)
        files = FileAssembler()
        for response in outputs:
            files.add(response.file)
        return files.files
