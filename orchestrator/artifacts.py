"""A job's files: its directory, outputs written whole or not at all, the stems' checkpoint files
(raw PCM) and their encoding into the stem files block by block, and ranged reads for Download.
Nothing here holds a whole file in memory."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from orchestrator.stages import StageFailed
from roar import audio
from roar.audio import _DiskWrites
from roar.errors import DiskFull, NotFound, OutOfRange, is_disk_full
from roar.v1 import common_pb2
from roar.v1 import orchestrator_pb2 as pb

# A checkpoint file holds one stem's windows so far: float32 little-endian, channels interleaved.
CHECKPOINT_SUFFIX = ".f32"
PCM_DTYPE = np.dtype("<f4")
# Frames per block when encoding a stem file from its checkpoint.
ENCODE_BLOCK_FRAMES = audio.BLOCK_FRAMES
DOWNLOAD_CHUNK_BYTES = 256 * 1024


def artifact_kind(name: str) -> str:
    if name.startswith("instrumental."):
        return "instrumental"
    if name.startswith("lyrics."):
        return "lyrics"
    if name.endswith(".json"):
        return "words"
    if name.endswith(".mp4"):
        return "video"
    return "stem"


def file_name(name: str) -> str:
    """A name a stage gave a file, refused unless it is a plain visible name in the job's
    directory (never hidden, never elsewhere)."""
    if not name or name != Path(name).name or name.startswith(".") or "\\" in name:
        raise StageFailed("INTERNAL", f"a stage sent a file with a bad name: {name!r}")
    return name


def write_failure(exc: OSError, what: str) -> StageFailed:
    """The stage failure for a write that failed because the disk is full (RESOURCE_EXHAUSTED);
    any other OSError is raised as it is."""
    if is_disk_full(exc):
        return StageFailed(DiskFull.code, DiskFull(what).message)
    raise exc


def write_file(directory: Path, name: str, data: bytes) -> None:
    """Writes a job's file whole or not at all; a full disk fails the stage with RESOURCE_EXHAUSTED."""
    temporary = directory / f".{name}.part"
    try:
        temporary.write_bytes(data)
        temporary.replace(directory / name)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise write_failure(exc, name) from exc


class JobFiles:
    """Every job's files, in a folder named by its id."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def directory(self, job_id: str) -> Path:
        return self.root / job_id

    def make(self, job_id: str) -> Path:
        path = self.directory(job_id)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def artifacts(self, job_id: str) -> list[pb.Artifact]:
        """The job's visible files (hidden ones are partial writes and checkpoints)."""
        job_dir = self.directory(job_id)
        if not job_dir.is_dir():
            return []
        return [
            pb.Artifact(
                name=p.name,
                kind=artifact_kind(p.name),
                size=p.stat().st_size,
                content_type=audio.content_type(p.name),
            )
            for p in sorted(job_dir.iterdir())
            if p.is_file() and not p.name.startswith(".")
        ]

    def open(self, job_id: str, name: str) -> BinaryIO:
        try:
            return (self.directory(job_id) / name).open("rb")
        except FileNotFoundError as exc:
            raise NotFound(f"the artifact {name!r} of job {job_id} is missing on the server") from exc

    def remove_scratch(self, job_id: str) -> None:
        """Drops what only an unfinished job needs: checkpoint files and partial writes."""
        job_dir = self.directory(job_id)
        if job_dir.is_dir():
            for path in job_dir.iterdir():
                if path.name.startswith("."):
                    shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def read_range(
    file: BinaryIO, offset: int, chunk_bytes: int = DOWNLOAD_CHUNK_BYTES
) -> Iterator[pb.DownloadChunk]:
    """The file from `offset` to its end, in chunks; OUT_OF_RANGE past its end."""
    size = os.fstat(file.fileno()).st_size
    if not 0 <= offset <= size:
        raise OutOfRange(f"offset {offset} is outside the file's {size} bytes")
    file.seek(offset)
    while data := file.read(chunk_bytes):
        yield pb.DownloadChunk(data=data, offset=offset, total_size=size)
        offset += len(data)


class ChunkFiles:
    """FileChunks as a stage sends them, written to hidden part files as they arrive; commit()
    gives every file its name once the call has ended well, discard() drops them."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._open: dict[str, BinaryIO] = {}
        self._finished: list[str] = []

    def _part(self, name: str) -> Path:
        return self._dir / f".{name}.part"

    def add(self, chunk: common_pb2.FileChunk) -> None:
        name = file_name(chunk.name)
        if name in self._finished:
            raise StageFailed("INTERNAL", f"a stage sent the file {name!r} twice")
        try:
            file = self._open.get(name) or self._open.setdefault(name, self._part(name).open("wb"))
            file.write(chunk.data)
            if chunk.eof:
                self._open.pop(name).close()
                self._finished.append(name)
        except OSError as exc:
            self.discard()
            raise write_failure(exc, name) from exc

    def commit(self) -> list[str]:
        if self._open:
            names = ", ".join(sorted(self._open))
            self.discard()
            raise StageFailed("INTERNAL", f"a stage ended before finishing the files {names}")
        for name in self._finished:
            self._part(name).replace(self._dir / name)
        return list(self._finished)

    def discard(self) -> None:
        for file in self._open.values():
            file.close()
        for name in [*self._open, *self._finished]:
            self._part(name).unlink(missing_ok=True)
        self._open.clear()
        self._finished.clear()


class StemCheckpoints:
    """One checkpoint file per stem in the job's directory (`.<stem>.f32`): the stem's frames
    so far as raw float32. Windows are appended as they arrive; truncate() cuts every file back
    to what the store says is committed."""

    def __init__(self, directory: Path, stems: Iterable[str], channels: int) -> None:
        self._dir = directory
        self.stems = list(stems)
        self._frame_bytes = channels * PCM_DTYPE.itemsize
        self.channels = channels

    def path(self, stem: str) -> Path:
        return self._dir / f".{stem}{CHECKPOINT_SUFFIX}"

    def frames_on_disk(self) -> int:
        """The frames every stem's file holds at least (0 where one is missing)."""
        sizes = [self.path(s).stat().st_size if self.path(s).exists() else 0 for s in self.stems]
        return min(sizes) // self._frame_bytes

    def truncate(self, frames: int) -> None:
        """Every file cut (or created) to exactly `frames` frames."""
        try:
            for stem in self.stems:
                with self.path(stem).open("ab") as file:
                    file.truncate(frames * self._frame_bytes)
        except OSError as exc:
            raise write_failure(exc, "the separation checkpoint") from exc

    def append(self, stem: str, pcm: bytes) -> None:
        """Adds one window of one stem, on disk (not only in the page cache) when it returns."""
        try:
            with self.path(stem).open("ab") as file:
                file.write(pcm)
                file.flush()
                os.fdatasync(file.fileno())
        except OSError as exc:
            raise write_failure(exc, "the separation checkpoint") from exc

    def encode(self, stem: str, target: Path, fmt: str, sample_rate: int) -> None:
        """Writes the stem's file (wav/flac/mp3, as roar.audio.FORMATS) from its checkpoint, block
        by block, whole or not at all."""
        container, subtype, _ = audio.FORMATS[fmt]
        temporary = target.with_name(f".{target.name}.part")
        block_bytes = ENCODE_BLOCK_FRAMES * self._frame_bytes
        try:
            with self.path(stem).open("rb") as source, temporary.open("wb", buffering=0) as raw:
                disk = _DiskWrites(raw)
                try:
                    with sf.SoundFile(
                        disk, "w", sample_rate, self.channels, subtype, format=container
                    ) as out:
                        while data := source.read(block_bytes):
                            block = np.frombuffer(data, PCM_DTYPE).reshape(-1, self.channels)
                            out.write(np.clip(block, -1.0, 1.0))
                            disk.raise_error()
                except (sf.LibsndfileError, AssertionError):
                    # The real cause when the disk refused a write (soundfile asserts that every
                    # frame was written, so a refused write can also surface as an assertion).
                    disk.raise_error()
                    raise
                disk.raise_error()
            temporary.replace(target)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise write_failure(exc, target.name) from exc

    def remove(self) -> None:
        for stem in self.stems:
            self.path(stem).unlink(missing_ok=True)
