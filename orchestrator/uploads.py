"""Resumable chunked uploads: each chunk is a unary call carrying its offset, so a client that
lost its connection asks how much was committed and goes on from there."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from orchestrator.store import Store
from roar import audio
from roar.errors import BadInput, FailedPrecondition, NotFound, ResourceExhausted
from roar.v1 import common_pb2
from roar.v1 import orchestrator_pb2 as pb

MAX_CHUNK_BYTES = 4 * 1024 * 1024


class Uploads:
    def __init__(self, store: Store, directory: Path, max_bytes: int) -> None:
        self._store = store
        self._dir = directory
        self._dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes

    def path(self, upload_id: str) -> Path:
        return self._dir / upload_id

    def start(self, filename: str, size: int, content_type: str, owner: str = "") -> pb.Upload:
        if size <= 0:
            raise BadInput("size must be the file's length in bytes, more than 0")
        if size > self.max_bytes:
            raise ResourceExhausted(
                f"the file is {size} bytes; this server takes at most {self.max_bytes} (ROAR_MAX_UPLOAD_MB)"
            )
        name = Path(filename.replace("\\", "/")).name or "song"
        upload = pb.Upload(
            upload_id=uuid.uuid4().hex, filename=name, size=size, max_chunk_bytes=MAX_CHUNK_BYTES
        )
        self.path(upload.upload_id).touch()
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
            with open(self.path(upload_id), "r+b") as f:
                f.seek(upload.committed)
                f.write(new)
            upload.committed += len(new)
            self._store.set_committed(upload_id, upload.committed)
        return upload

    async def finish(self, upload_id: str) -> pb.Upload:
        upload = self.get(upload_id)
        if upload.finished:
            return upload
        if upload.committed != upload.size:
            raise FailedPrecondition(f"only {upload.committed} of {upload.size} bytes are committed")
        duration, rate, channels, fmt = await asyncio.to_thread(audio.probe, str(self.path(upload_id)))
        info = common_pb2.AudioInfo(
            duration_seconds=duration, sample_rate=rate, channels=channels, format=fmt
        )
        self._store.finish_upload(upload_id, info)
        upload.finished = True
        upload.audio.CopyFrom(info)
        return upload
