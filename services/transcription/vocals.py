"""A vocals stem as the models and the aligner hear it: mono float32 at 16 kHz, brought to one level
(StemLevel) so that a quiet voice is heard as a loud one. The samples wait in a temporary file on
disk, appended as they arrive, and are read a stretch at a time (a passage, a chunk of voice
detection), so the service's memory does not grow with the song: an hour at 16 kHz is 230 MB of
float32, more than all the rest of the work on it."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import numpy as np

from roar.audio import BLOCK_FRAMES, max_audio_seconds, mono_blocks, refuse_past, resample_blocks
from roar.errors import BadInput, DiskFull, is_disk_full
from roar.progress import check_cancelled
from services.transcription import vad

_SAMPLE = np.dtype("<f4")


class VocalsFile:
    """The level-normalised samples of a stem kept on disk (a vad.Samples): `len(vocals)` samples,
    `vocals[a:b]` a float32 array of those from a to b, times `gain`. Samples are appended as they
    arrive. Closing it deletes the file."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._frames = 0
        self.gain = np.float32(1.0)

    @classmethod
    def spooled(cls) -> VocalsFile:
        """An empty one in a new temporary file."""
        return cls(tempfile.TemporaryFile(prefix="roar-vocals-"))

    def append(self, block: np.ndarray) -> None:
        """Adds samples at the end. Raises DiskFull when the disk cannot hold them."""
        try:
            data = block.astype(_SAMPLE, copy=False).tobytes()
            os.pwrite(self._file.fileno(), data, self._frames * _SAMPLE.itemsize)
        except OSError as exc:
            if is_disk_full(exc):
                raise DiskFull("the vocals") from exc
            raise
        self._frames += len(block)

    def __len__(self) -> int:
        return self._frames

    def __getitem__(self, index: slice, /) -> np.ndarray:
        start, stop, step = index.indices(self._frames)
        if step != 1:
            raise ValueError("vocals are read in plain stretches, without a step")
        samples = np.empty(max(stop - start, 0), _SAMPLE)
        buffer = memoryview(samples).cast("B")
        done = 0
        while done < len(buffer):  # preadv: no shared file position, so any thread may read
            read = os.preadv(self._file.fileno(), [buffer[done:]], start * _SAMPLE.itemsize + done)
            if read == 0:
                raise EOFError("the vocals file ended early")
            done += read
        samples *= self.gain
        return samples.astype(np.float32, copy=False)

    @property
    def duration(self) -> float:
        return self._frames / vad.SAMPLE_RATE

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> VocalsFile:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


def read_vocals(source: str | Path | BinaryIO) -> VocalsFile:
    """Decodes an audio file (a path or a binary file) block by block into a VocalsFile brought to
    the level StemLevel finds. Raises BadInput for audio that does not decode or is too long
    (roar.audio.mono_blocks), DiskFull when the disk cannot hold it, Cancelled when the run is
    cancelled meanwhile."""
    vocals = VocalsFile.spooled()
    try:
        level = StemLevel()
        with closing(mono_blocks(source, vad.SAMPLE_RATE)) as blocks:  # closed at once when cancelled
            for block in blocks:
                check_cancelled()
                vocals.append(block)
                level.add(block)
        vocals.gain = level.decide(vocals).gain
        return vocals
    except BaseException:
        vocals.close()
        raise


# The stem's level is taken from its start, once it holds this much sound (or from all of it when it
# ends first): voice detection hears the audio at that level, so nothing is found before the level is
# known, and the level of a stem still arriving cannot wait for its end.
LEVEL_SECONDS = 30.0


@dataclass(frozen=True)
class Level:
    level_db: float | None  # the stem's own level before the gain (vad.level_of); None: silence
    gain: np.float32  # brings it to vad.TARGET_LEVEL_DB (vad.gain_for)

    @property
    def heard_level_db(self) -> float | None:
        """The level of the audio after the gain."""
        return None if self.level_db is None else self.level_db + 20.0 * float(np.log10(self.gain))


class StemLevel:
    """Finds a stem's level from its samples as they arrive (mono 16 kHz): from its first
    LEVEL_SECONDS of sound (frames over vad.SILENCE_DB), or all of it when it has less. Depends only
    on the samples, never on how they arrive."""

    def __init__(self) -> None:
        self._pending = np.zeros(0, np.float32)
        self._loudness: list[np.ndarray] = []
        self._sounding = 0  # frames over SILENCE_DB so far
        self.frames: int | None = None  # samples the level is taken from, once enough sound arrived

    def add(self, block: np.ndarray) -> None:
        if self.frames is not None:
            return
        self._pending = np.concatenate([self._pending, block])
        whole = len(self._pending) // vad.FRAME * vad.FRAME
        loudness = vad.frame_loudness_db(self._pending[:whole])
        heard = sum(len(part) for part in self._loudness)
        self._pending = self._pending[whole:]
        sounding = np.cumsum(loudness > vad.SILENCE_DB) + self._sounding
        enough = round(LEVEL_SECONDS * vad.SAMPLE_RATE / vad.FRAME)
        reached = np.flatnonzero(sounding >= enough)
        if len(reached):
            loudness = loudness[: reached[0] + 1]
            self.frames = (heard + len(loudness)) * vad.FRAME
        self._loudness.append(loudness)
        self._sounding = int(sounding[-1]) if len(sounding) else self._sounding

    def decide(self, audio: vad.Samples) -> Level:
        """The level, from the audio's first `frames` samples (all of it when the stem ended with
        less sound than LEVEL_SECONDS). `audio` holds the stem's samples as they arrived."""
        frames = len(audio) if self.frames is None else self.frames
        if self.frames is None and len(self._pending):
            self._loudness.append(vad.frame_loudness_db(self._pending))
        level = vad.level_of(np.concatenate(self._loudness)) if self._loudness else None
        return Level(level, vad.gain_for(level, _Prefix(audio, frames)))


@dataclass(frozen=True)
class _Prefix:
    """The first `frames` samples of some audio."""

    audio: vad.Samples
    frames: int

    def __len__(self) -> int:
        return self.frames

    def __getitem__(self, index: slice, /) -> np.ndarray:
        start, stop, _ = index.indices(self.frames)
        return self.audio[start:stop]


class PcmSpool:
    """Raw samples (float32 little-endian, channels interleaved) as a call receives them: the
    server's event loop appends what arrives (`write`, then `end`), a worker thread reads it back as
    it comes (pcm_blocks). They wait on disk, in files of SEGMENT_BYTES in `directory`, each deleted
    once read, so neither memory nor disk holds more than the samples not yet read."""

    def __init__(self, directory: Path, sample_rate: int, channels: int) -> None:
        self.sample_rate = sample_rate
        self.channels = channels
        self._directory = directory
        self._written = 0
        self._dropped = 0  # segments read and deleted
        self._ended = False
        self._error: Exception | None = None
        self._changed = threading.Condition()

    def _segment(self, index: int) -> Path:
        return self._directory / f"pcm-{index:06d}"

    def write(self, data: bytes) -> None:
        """Appends samples (from the one writer). Raises OSError when the disk cannot hold them."""
        position, view = self._written, memoryview(data)
        while view:
            index, within = divmod(position, SEGMENT_BYTES)
            size = min(len(view), SEGMENT_BYTES - within)
            with self._segment(index).open("ab") as segment:
                segment.write(view[:size])
            position, view = position + size, view[size:]
        with self._changed:
            self._written = position
            self._changed.notify_all()

    def end(self, error: Exception | None = None) -> None:
        """No more samples come; with `error`, the reader raises it."""
        with self._changed:
            self._ended, self._error = True, error
            self._changed.notify_all()

    def _read(self, offset: int, size: int) -> bytes:
        """`size` bytes from `offset`, which have arrived; the segments wholly before them go."""
        parts = []
        for index in range(offset // SEGMENT_BYTES, -(-(offset + size) // SEGMENT_BYTES)):
            base = index * SEGMENT_BYTES
            start, stop = max(offset - base, 0), min(offset + size - base, SEGMENT_BYTES)
            with self._segment(index).open("rb") as segment:
                segment.seek(start)
                parts.append(segment.read(stop - start))
        for index in range(self._dropped, (offset + size) // SEGMENT_BYTES):
            self._segment(index).unlink(missing_ok=True)
        self._dropped = max(self._dropped, (offset + size) // SEGMENT_BYTES)
        return b"".join(parts)

    def _wait(self, offset: int, size: int, waiting: Callable[[], None]) -> bytes:
        """Up to `size` bytes from `offset` once they arrived (fewer only at the end), waiting for
        them in steps of WAIT_SECONDS so that a cancelled run stops."""
        while True:
            with self._changed:
                written, ended, error = self._written, self._ended, self._error
                if written - offset < size and not ended:
                    self._changed.wait(WAIT_SECONDS)
            if error is not None:
                raise error
            if written - offset >= size or ended:
                return self._read(offset, min(size, written - offset))
            check_cancelled()
            waiting()

    def frames(self, waiting: Callable[[], None]) -> Iterator[np.ndarray]:
        """The samples as (frames, channels) float32 blocks of BLOCK_FRAMES frames (the last one
        shorter): the same blocks whatever pieces they arrived in."""
        frame_bytes = 4 * self.channels
        offset = 0
        while data := self._wait(offset, BLOCK_FRAMES * frame_bytes, waiting):
            if len(data) % frame_bytes:
                raise BadInput(f"the samples end inside a frame of {self.channels} float32 channels")
            offset += len(data)
            yield np.frombuffer(data, "<f4").reshape(-1, self.channels)


# A reader waiting for samples checks for cancellation this often.
WAIT_SECONDS = 0.5
# Raw samples wait on disk in files of this size (47 s of 44.1 kHz stereo float32).
SEGMENT_BYTES = 1 << 24


def pcm_blocks(
    spool: PcmSpool, waiting: Callable[[], None], max_seconds: float | None = None
) -> Iterator[np.ndarray]:
    """Raw samples as they arrive, as mono float32 blocks at 16 kHz (as mono_blocks gives a file's:
    for a float32 WAV of the same samples the blocks are equal). Raises BadInput past `max_seconds`
    (default: ROAR_MAX_AUDIO_MINUTES) and for no samples at all."""
    limit = max_audio_seconds() if max_seconds is None else max_seconds
    read = 0

    def mono() -> Iterator[np.ndarray]:
        nonlocal read
        for block in spool.frames(waiting):
            read += len(block)
            refuse_past(read, spool.sample_rate, limit)
            yield block.mean(axis=1, dtype=np.float32)[None]

    for piece in resample_blocks(mono(), spool.sample_rate, vad.SAMPLE_RATE):
        yield piece[0]
    if read == 0:
        raise BadInput("no samples were sent")
