"""Resumable chunked uploads: each chunk is a unary call carrying its offset, so a client that
lost its connection asks how much was committed and goes on from there."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from orchestrator.store import Store
from roar import audio, metrics
from roar.errors import BadInput, DiskFull, FailedPrecondition, NotFound, ResourceExhausted, is_disk_full
from roar.v1 import orchestrator_pb2 as pb

MAX_CHUNK_BYTES = 4 * 1024 * 1024
# Names and texts are stored and listed with every job: bounded, so no listing can grow past
# a message's size. 255 bytes is what file systems allow for a file name.
MAX_FILENAME_BYTES = 255
MAX_CONTENT_TYPE_BYTES = 255
# The normalised audio the stages get, beside the upload as sent: "<upload_id>.flac".
NORMALISED_SUFFIX = ".flac"


def clean_filename(filename: str) -> str:
    """The file's own name (no directories, no control characters); longer than
    MAX_FILENAME_BYTES in UTF-8 is refused rather than cut, so what is stored is what was sent."""
    name = Path(filename.replace("\\", "/")).name
    name = "".join(c for c in name if c.isprintable()).strip() or "song"
    if len(name.encode()) > MAX_FILENAME_BYTES:
        raise BadInput(f"the filename is longer than {MAX_FILENAME_BYTES} bytes (UTF-8)")
    return name


class Uploads:
    def __init__(self, store: Store, directory: Path, max_bytes: int, max_audio_seconds: float) -> None:
        self._store = store
        self._dir = directory
        self._dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.max_audio_seconds = max_audio_seconds

    @property
    def directory(self) -> Path:
        return self._dir

    def path(self, upload_id: str) -> Path:
        """The file as the client sent it."""
        return self._dir / upload_id

    def normalised_path(self, upload_id: str) -> Path:
        return self._dir / f"{upload_id}{NORMALISED_SUFFIX}"

    def audio_path(self, upload_id: str) -> Path:
        """What a job sends to the stages: the normalised FLAC (uploads finished before
        normalisation existed have only the file as sent)."""
        normalised = self.normalised_path(upload_id)
        return normalised if normalised.exists() else self.path(upload_id)

    def delete_files(self, upload_id: str) -> None:
        self.path(upload_id).unlink(missing_ok=True)
        self.normalised_path(upload_id).unlink(missing_ok=True)

    def start(self, filename: str, size: int, content_type: str, owner: str = "") -> pb.Upload:
        if size <= 0:
            raise BadInput("size must be the file's length in bytes, more than 0")
        if size > self.max_bytes:
            raise ResourceExhausted(
                f"the file is {size} bytes; this server takes at most {self.max_bytes} (ROAR_MAX_UPLOAD_MB)"
            )
        if len(content_type.encode()) > MAX_CONTENT_TYPE_BYTES:
            raise BadInput(f"content_type is longer than {MAX_CONTENT_TYPE_BYTES} bytes")
        name = clean_filename(filename)
        upload = pb.Upload(
            upload_id=uuid.uuid4().hex, filename=name, size=size, max_chunk_bytes=MAX_CHUNK_BYTES
        )
        try:
            self.path(upload.upload_id).touch()
        except OSError as exc:
            if is_disk_full(exc):
                raise DiskFull("the upload") from exc
            raise
        self._store.add_upload(upload, content_type, owner)
        return upload

    def get(self, upload_id: str) -> pb.Upload:
        upload = self._store.get_upload(upload_id) if upload_id else None
        if upload is None:
            raise NotFound(f"no upload {upload_id!r}")
        upload.max_chunk_bytes = MAX_CHUNK_BYTES
        return upload

    def add_chunk(self, upload_id: str, offset: int, data: bytes) -> pb.Upload:
        upload = self.get(upload_id)
        if upload.finished:
            raise FailedPrecondition("the upload is already finished")
        if len(data) > MAX_CHUNK_BYTES:
            raise ResourceExhausted(f"a chunk holds at most {MAX_CHUNK_BYTES} bytes, got {len(data)}")
        if offset < 0 or offset > upload.committed:
            raise FailedPrecondition(
                f"offset {offset} is not within the {upload.committed} bytes committed; "
                "send from the committed offset (GetUpload)"
            )
        if offset + len(data) > upload.size:
            raise BadInput(f"the chunk ends at {offset + len(data)}, past the declared size {upload.size}")
        # Bytes before `committed` are already stored: a resent chunk only adds what is new.
        new = data[upload.committed - offset :]
        if new:
            try:
                with open(self.path(upload_id), "r+b") as f:
                    f.seek(upload.committed)
                    f.write(new)
            except FileNotFoundError as exc:  # expired meanwhile (ROAR_UPLOAD_TTL_HOURS)
                raise NotFound(f"no upload {upload_id!r}") from exc
            except OSError as exc:
                if is_disk_full(exc):
                    raise DiskFull("the chunk") from exc
                raise
            upload.committed += len(new)
            metrics.UPLOAD_BYTES.inc(len(new))
            self._store.set_committed(upload_id, upload.committed)
        return upload

    async def finish(self, upload_id: str) -> pb.Upload:
        upload = self.get(upload_id)
        if upload.finished:
            return upload
        if upload.committed != upload.size:
            raise FailedPrecondition(f"only {upload.committed} of {upload.size} bytes are committed")
        # Normalised to a temporary name first: a concurrent FinishUpload or a crash never leaves
        # a half-written file where jobs look.
        partial = self._dir / f".{upload_id}.{uuid.uuid4().hex}.part"
        try:
            info = await asyncio.to_thread(
                audio.normalise, self.path(upload_id), partial, self.max_audio_seconds
            )
            partial.replace(self.normalised_path(upload_id))
        except FileNotFoundError as exc:  # expired meanwhile
            raise NotFound(f"no upload {upload_id!r}") from exc
        except OSError as exc:
            if is_disk_full(exc):
                raise DiskFull("the decoded audio") from exc
            raise
        finally:
            partial.unlink(missing_ok=True)
        self._store.finish_upload(upload_id, info)
        upload.finished = True
        upload.audio.CopyFrom(info)
        return upload
