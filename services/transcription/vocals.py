"""A vocals stem as the models and the aligner hear it: mono float32 at 16 kHz, brought to one level
(vad.level_gain) so that a quiet voice is heard as a loud one. The samples wait in a temporary file
on disk and are read a stretch at a time (a passage, a chunk of voice detection), so the service's
memory does not grow with the song: an hour at 16 kHz is 230 MB of float32, more than all the rest
of the work on it."""

from __future__ import annotations

import os
import tempfile
from contextlib import closing
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import numpy as np

from roar.audio import mono_blocks
from roar.errors import DiskFull, is_disk_full
from roar.progress import check_cancelled
from services.transcription import vad

_SAMPLE = np.dtype("<f4")


class VocalsFile:
    """The level-normalised samples of a stem kept on disk (a vad.Samples): `len(vocals)` samples,
    `vocals[a:b]` a float32 array of those from a to b. Closing it deletes the file."""

    def __init__(self, file: BinaryIO, frames: int, gain: np.float32) -> None:
        self._file = file
        self._frames = frames
        self._gain = gain

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
        samples *= self._gain
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
    """Decodes an audio file (a path or a binary file) block by block into a VocalsFile. Raises
    BadInput for audio that does not decode or is too long (roar.audio.mono_blocks), DiskFull when
    the disk cannot hold it, Cancelled when the run is cancelled meanwhile."""
    spool = tempfile.TemporaryFile(prefix="roar-vocals-")  # noqa: SIM115 (the VocalsFile owns it)
    try:
        frames = 0
        with closing(mono_blocks(source, vad.SAMPLE_RATE)) as blocks:  # closed at once when cancelled
            for block in blocks:
                check_cancelled()
                spool.write(block.astype(_SAMPLE, copy=False).tobytes())
                frames += len(block)
        spool.flush()
        level = vad.level_gain(VocalsFile(spool, frames, np.float32(1.0)))
        return VocalsFile(spool, frames, level)
    except OSError as exc:
        spool.close()
        if is_disk_full(exc):
            raise DiskFull("the vocals") from exc
        raise
    except BaseException:
        spool.close()
        raise
