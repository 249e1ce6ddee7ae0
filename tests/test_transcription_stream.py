"""Transcription as the vocals arrive: raw samples sent in pieces give what the same audio sent as a
file gives; a passage comes back before the input has ended; a call resumed with the passages an
earlier one sent transcribes only the windows after them and ends with the same transcript; done
passages that are not this service's are refused. The service runs in-process on loopback with a
tiny random Whisper of the real architecture (its words are random, but the same for the same input)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile as sf

from roar.audio import BLOCK_FRAMES
from roar.errors import BadInput
from roar.v1 import common_pb2, transcription_pb2, transcription_pb2_grpc
from services.transcription import vocals
from services.transcription.vocals import LEVEL_SECONDS
from services.transcription.windows import PassageState
from tests.support.tiny_whisper import build_tiny_whisper
from tests.test_transcription import (
    SONG,
    all_words,
    one_torch_thread,  # noqa: F401 (an autouse fixture)
    transcription_server,
    transcription_stub,
)

Request = transcription_pb2.TranscribeRequest
Response = transcription_pb2.TranscribeResponse
# Each call must end well within this (they take seconds).
CALL_SECONDS = 240.0
# A cancelled call's work stops within this (the service checks every WAIT_SECONDS while it waits).
STOP_SECONDS = 2.0


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny")


@pytest.fixture(scope="module")
def song() -> tuple[np.ndarray, int]:
    """The committed song's vocals four times over (82 s, twelve sung lines: two windows), as
    float32 (frames, 2) at 44.1 kHz."""
    samples, rate = sf.read(SONG / "vocals.flac", dtype="float32", always_2d=True)
    return np.concatenate([samples] * 4), rate


def float_wav(samples: np.ndarray, rate: int) -> bytes:
    """The samples as a float32 WAV: decoding it gives them back exactly."""
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def options(
    pcm: tuple[int, int] | None = None, done: Sequence[transcription_pb2.Passage] = ()
) -> transcription_pb2.TranscriptionOptions:
    chosen = transcription_pb2.TranscriptionOptions(language="en", done=done)
    if pcm is not None:
        chosen.pcm.sample_rate, chosen.pcm.channels = pcm
    return chosen


async def pieces(first: Request, data: bytes, size: int, pause_every: int = 8) -> AsyncIterator[Request]:
    """The options, then the data in pieces of `size` bytes with a pause now and then."""
    yield first
    for count, start in enumerate(range(0, len(data), size)):
        if count % pause_every == 0:
            await asyncio.sleep(0.01)
        yield Request(audio=data[start : start + size])


async def call(requests: AsyncIterator[Request], tiny_dir: Path) -> list[Response]:
    async with transcription_stub(tiny_dir) as stub:
        return await asyncio.wait_for(_responses(stub.Transcribe(requests)), CALL_SECONDS)


async def _responses(responses: AsyncIterator[Response]) -> list[Response]:
    return [r async for r in responses]


def passages_of(responses: list[Response]) -> list[transcription_pb2.Passage]:
    return [r.passage for r in responses if r.HasField("passage")]


@pytest.fixture(scope="module")
def file_call(tiny_dir: Path, song: tuple[np.ndarray, int]) -> list[Response]:
    """The song sent as a file, in one go."""
    samples, rate = song
    return asyncio.run(call(pieces(Request(options=options()), float_wav(samples, rate), 1 << 20), tiny_dir))


def test_samples_sent_in_pieces_give_what_the_file_gives(
    tiny_dir: Path, song: tuple[np.ndarray, int], file_call: list[Response]
) -> None:
    samples, rate = song
    pcm = samples.astype("<f4").tobytes()
    # Pieces that split frames and blocks anywhere: 3,001 bytes is no whole number of frames.
    responses = asyncio.run(call(pieces(Request(options=options(pcm=(rate, 2))), pcm, 3_001), tiny_dir))
    transcript = responses[-1].transcript
    assert transcript == file_call[-1].transcript
    assert len(all_words(transcript)) > 0 and transcript.model == "tiny"
    assert passages_of(responses) == passages_of(file_call)
    assert [p.index for p in passages_of(responses)] == [0, 1]
    assert passages_of(responses)[1].start > 40.0  # the second window holds the last lines


async def _a_passage_before_the_rest(tiny_dir: Path, samples: np.ndarray, rate: int) -> tuple[float, bool]:
    """Sends the first 60 s of samples, waits for a passage, then the rest. Returns how much audio
    had been sent when the first passage came, and whether the call then ended normally."""
    head = round(60.0 * rate)
    release = asyncio.Event()
    sent = 0.0

    async def requests() -> AsyncIterator[Request]:
        nonlocal sent
        yield Request(options=options(pcm=(rate, 2)))
        for start in range(0, len(samples), rate // 2):  # half a second at a time
            if start >= head:
                await release.wait()
            piece = samples[start : start + rate // 2]
            sent += len(piece) / rate
            yield Request(audio=piece.astype("<f4").tobytes())
            await asyncio.sleep(0)

    first_at = -1.0
    async with transcription_stub(tiny_dir) as stub:
        async with asyncio.timeout(CALL_SECONDS):
            async for response in stub.Transcribe(requests()):
                if response.HasField("passage") and first_at < 0:
                    first_at = sent
                    release.set()
                message = response.progress.message
                if response.HasField("progress") and not release.is_set() and "loading" not in message:
                    # A percent of what has arrived: the song's length is not known yet.
                    assert message.endswith(" received so far)"), message
                if response.HasField("transcript"):
                    return first_at, True
    return first_at, False


def test_a_passage_comes_back_before_the_input_ends(tiny_dir: Path, song: tuple[np.ndarray, int]) -> None:
    samples, rate = song
    first_at, ended = asyncio.run(_a_passage_before_the_rest(tiny_dir, samples, rate))
    # The level needs LEVEL_SECONDS of sound, the first window the line after its six.
    assert LEVEL_SECONDS < first_at <= 60.0 < len(samples) / rate
    assert ended


def test_a_resumed_call_transcribes_only_the_windows_after_the_done_ones(
    tiny_dir: Path, song: tuple[np.ndarray, int], file_call: list[Response]
) -> None:
    samples, rate = song
    before = passages_of(file_call)
    pcm = samples.astype("<f4").tobytes()
    resumed = asyncio.run(
        call(pieces(Request(options=options(pcm=(rate, 2), done=before[:1])), pcm, 1 << 16), tiny_dir)
    )
    assert passages_of(resumed) == before[1:]  # the first window is not transcribed again
    assert resumed[-1].transcript == file_call[-1].transcript


def bad_done(before: list[transcription_pb2.Passage]) -> dict[str, list[transcription_pb2.Passage]]:
    def changed(index: int = 0, **fields: object) -> transcription_pb2.Passage:
        passage = transcription_pb2.Passage()
        passage.CopyFrom(before[0])
        passage.index = index
        for name, value in fields.items():
            if name == "words":
                passage.words.extend(value)  # type: ignore[arg-type]
            else:
                setattr(passage, name, value)
        return passage

    return {
        "out of order": [changed(index=1)],
        "not a time": [changed(start=float("nan"))],
        "ends before it starts": [changed(start=before[0].end + 1.0)],
        "state it did not write": [changed(state=b"\x00not json")],
        "state with other fields": [changed(state=b'{"tokens": -1, "language": "en"}')],
        "too many words": [changed(words=[common_pb2.Word(text="la", start=1.0, end=1.1)] * 1001)],
        "another song's window": [changed(start=before[0].start + 0.5)],
        "more windows than the audio has": [*before, changed(index=len(before), start=90.0, end=91.0)],
    }


@pytest.mark.parametrize(
    "case",
    [
        "out of order",
        "not a time",
        "ends before it starts",
        "state it did not write",
        "state with other fields",
        "too many words",
        "another song's window",
        "more windows than the audio has",
    ],
)
def test_done_passages_this_service_did_not_send_are_refused(
    tiny_dir: Path, song: tuple[np.ndarray, int], file_call: list[Response], case: str
) -> None:
    samples, rate = song
    done = bad_done(passages_of(file_call))[case]
    pcm = samples.astype("<f4").tobytes()
    requests = [Request(options=options(pcm=(rate, 2), done=done))]
    requests += [Request(audio=pcm[start : start + (1 << 16)]) for start in range(0, len(pcm), 1 << 16)]
    assert asyncio.run(refusal(requests, tiny_dir)) == grpc.StatusCode.INVALID_ARGUMENT


async def refusal(requests: list[Request], tiny_dir: Path) -> grpc.StatusCode:
    """The status of a call the service refuses while the client is still sending. The call is
    made with the blocking client: the asyncio client reports INTERNAL "Internal error from Core"
    instead of the server's status when a write is under way as the status arrives
    (grpc/grpc#36066)."""

    def blocking_call(address: str) -> grpc.StatusCode:
        with grpc.insecure_channel(address) as channel:
            try:
                for _ in transcription_pb2_grpc.TranscriptionStub(channel).Transcribe(iter(requests)):
                    pass
            except grpc.RpcError as exc:
                return exc.code()
        raise AssertionError("the call was not refused")

    async with transcription_server(tiny_dir) as address:
        return await asyncio.wait_for(asyncio.to_thread(blocking_call, address), CALL_SECONDS)


def test_passage_state_round_trips_and_refuses_what_it_did_not_write() -> None:
    state = PassageState(tokens=123, language="en")
    assert PassageState.decode(state.encode()) == state
    for data in (b"", b"[]", b'{"tokens": 1}', b'{"tokens": 1.5, "language": "en"}', b"{" * 300):
        with pytest.raises(BadInput):
            PassageState.decode(data)


@pytest.mark.parametrize(
    ("layout", "data"),
    [
        ((0, 2), b"\x00" * 800),  # no rate
        ((44_100, 9), b"\x00" * 72),  # more channels than a stem has
        ((44_100, 2), b"\x00" * 801),  # ends inside a frame
        ((44_100, 2), b""),  # no samples
    ],
)
def test_raw_samples_it_cannot_take_are_refused(tiny_dir: Path, layout: tuple[int, int], data: bytes) -> None:
    requests = [Request(options=options(pcm=layout))]
    requests += [Request(audio=data[start : start + 100]) for start in range(0, len(data), 100)]
    assert asyncio.run(refusal(requests, tiny_dir)) == grpc.StatusCode.INVALID_ARGUMENT


async def _cancelled_while_waiting_then_another(tiny_dir: Path, samples: np.ndarray, rate: int) -> list[str]:
    """A call that sends a few seconds of samples and then nothing is cancelled while the service
    waits for more; STOP_SECONDS later another call comes. Returns the second call's messages."""
    async with transcription_stub(tiny_dir) as stub:
        head = samples[: 5 * rate].astype("<f4").tobytes()
        never_ending = asyncio.Event()

        async def requests() -> AsyncIterator[Request]:
            yield Request(options=options(pcm=(rate, 2)))
            yield Request(audio=head)
            await never_ending.wait()

        waiting = stub.Transcribe(requests())
        async for response in waiting:
            if response.HasField("progress") and "received so far" in response.progress.message:
                break
        waiting.cancel()
        await asyncio.sleep(STOP_SECONDS)
        second = stub.Transcribe(pieces(Request(options=options(pcm=(rate, 2))), head, 1 << 16))
        async with asyncio.timeout(30.0):  # a worker still waiting would hold the second call forever
            messages = [r.progress.message async for r in second if r.HasField("progress")]
        never_ending.set()
        return messages


def test_a_call_cancelled_while_samples_are_awaited_frees_its_worker(
    tiny_dir: Path, song: tuple[np.ndarray, int]
) -> None:
    samples, rate = song
    messages = asyncio.run(_cancelled_while_waiting_then_another(tiny_dir, samples, rate))
    assert messages and not any(m.startswith("queued") for m in messages), messages


def test_raw_samples_leave_the_disk_as_they_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vocals, "SEGMENT_BYTES", 1_000)
    spool = vocals.PcmSpool(tmp_path, 44_100, 2)
    samples = np.random.default_rng(0).standard_normal((3 * BLOCK_FRAMES + 5, 2)).astype("<f4")
    data = samples.tobytes()
    for start in range(0, len(data), 777):  # pieces across the segments' ends
        spool.write(data[start : start + 777])
    spool.end()
    on_disk = []
    blocks = []
    for block in spool.frames(lambda: None):
        blocks.append(block)
        on_disk.append(sum(f.stat().st_size for f in tmp_path.iterdir()))
    np.testing.assert_array_equal(np.concatenate(blocks), samples)
    assert [len(b) for b in blocks] == [BLOCK_FRAMES] * 3 + [5]
    # After each block only what is not yet read stays (and a segment's start).
    assert on_disk == sorted(on_disk, reverse=True) and on_disk[-1] < 1_000
