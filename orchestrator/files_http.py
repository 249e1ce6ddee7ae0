"""Job files over plain HTTP on the web port, for the page's <a download> links and <audio>
elements, which cannot make gRPC calls nor send headers:

- GET/HEAD /files/<job_id>/<name>: one artifact, with single byte ranges (206, 416); a request for
  several ranges is answered 200 with the whole file. ?download=1 asks the browser to save it.
- GET /files/<job_id>.zip: every artifact of the job in one ZIP, streamed as it is made.
- POST /session (Authorization: Bearer KEY) keeps the key in an HttpOnly cookie sent to /files only;
  DELETE /session drops it.

Callers are checked as on the gRPC API (orchestrator/auth.py: the Authorization header, else the
cookie), and files are read through the same Jobs methods as the Download RPC, so owners, expired
files and unknown names get the same answers. Nothing reads a file whole. Every answer is logged
on the orchestrator's logger with the range it served. WebGuard serves these paths to the page's
own origin only."""

from __future__ import annotations

import hashlib
import logging
import re
import zipfile
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC
from pathlib import PurePath
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from orchestrator.auth import Authenticator, Caller
from orchestrator.jobs import Jobs
from roar import metrics
from roar.auth import bearer_key
from roar.errors import NotFound, RoarError
from roar.v1 import orchestrator_pb2 as pb

log = logging.getLogger("roar.orchestrator")

FILES_PREFIX = "/files/"
SESSION_PATH = "/session"
ZIP_SUFFIX = ".zip"
KEY_COOKIE = "roar_key"
FILE_METHODS = ("GET", "HEAD")
SESSION_METHODS = ("POST", "DELETE")
# A single range of the forms a-b, a- and -n (RFC 9110 14.1.2); anything else is ignored.
SINGLE_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
# What a cookie value may hold unquoted (RFC 6265 cookie-octet); keys made by `roar keys create` do.
COOKIE_VALUE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]+")
# Statuses for the domain errors these answers can meet; anything else is a server error.
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "UNAUTHENTICATED": 401,
    "NOT_FOUND": 404,
    "OUT_OF_RANGE": 416,
    "UNAVAILABLE": 503,
}
# ZIP dates start in 1980.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def is_files_path(path: str) -> bool:
    return path.startswith(FILES_PREFIX) or path == SESSION_PATH


class RangeNotSatisfiable(Exception):
    pass


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The (first, last) bytes, inclusive, a Range header asks of a file of `size` bytes; None for
    the whole file (no header, one not understood, or several ranges); RangeNotSatisfiable when
    the range holds none of the file's bytes."""
    match = SINGLE_RANGE.fullmatch(header.strip()) if header else None
    if match is None or match[1] == match[2] == "":
        return None
    if match[1] == "":  # the last n bytes
        suffix = int(match[2])
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable
        return max(0, size - suffix), size - 1
    first = int(match[1])
    last = int(match[2]) if match[2] else size - 1
    if match[2] and last < first:
        return None  # invalid syntax: ignored, as RFC 9110 asks
    if first >= size:
        raise RangeNotSatisfiable
    return first, min(last, size - 1)


def attachment(filename: str) -> str:
    """A Content-Disposition that saves the file under `filename`, non-ASCII names included."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename)}"


def _etag(job: pb.Job, artifact: pb.Artifact) -> str:
    # A job's files change only when the job runs again, which changes its `updated`.
    tag = f"{job.job_id}/{artifact.name}/{artifact.size}/{job.updated.ToNanoseconds()}"
    return '"' + hashlib.sha256(tag.encode()).hexdigest()[:32] + '"'


def _key_cookie(value: str, max_age: int | None, secure: bool) -> str:
    parts = [f"{KEY_COOKIE}={value}", "HttpOnly", "SameSite=Strict", f"Path={FILES_PREFIX.rstrip('/')}"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


class _Sink:
    """A write-only stream that keeps what a ZipFile writes until it is taken."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> list[bytes]:
        """What was written since the last take, in one piece (none when nothing was)."""
        data = b"".join(self._parts)
        self._parts.clear()
        return [data] if data else []


class FilesHttp:
    """The ASGI app behind FILES_PREFIX and SESSION_PATH."""

    def __init__(self, jobs: Jobs, auth: Authenticator) -> None:
        self._jobs = jobs
        self._auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        served = ""
        try:
            if scope["path"] == SESSION_PATH:
                response = self._session(request)
            else:
                response, served = await self._file(request)
        except RoarError as exc:
            status = HTTP_STATUS.get(exc.code, 500)
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
            response = PlainTextResponse(exc.message + "\n", status, headers)
            served = exc.message
        log.info("%s %r: %d %s", request.method, scope["path"], response.status_code, served)
        await response(scope, receive, send)

    def _caller(self, request: Request) -> Caller:
        authorization = request.headers.get("authorization")
        if authorization is None and (cookie := request.cookies.get(KEY_COOKIE)):
            authorization = f"Bearer {cookie}"
        return self._auth.caller([] if authorization is None else [("authorization", authorization)])

    def _session(self, request: Request) -> Response:
        secure = request.url.scheme == "https"
        if request.method == "DELETE":
            return Response(status_code=204, headers={"Set-Cookie": _key_cookie("", 0, secure)})
        if request.method != "POST":
            return PlainTextResponse("POST or DELETE\n", 405, {"Allow": ", ".join(SESSION_METHODS)})
        metadata = [(name, value) for name, value in request.headers.items() if name == "authorization"]
        if not metadata:
            return PlainTextResponse("send the API key as `Authorization: Bearer <key>`\n", 400)
        self._auth.caller(metadata)
        key = bearer_key(metadata) or ""
        if not COOKIE_VALUE.fullmatch(key):
            return PlainTextResponse("this key cannot be kept in a cookie: send it in each request\n", 400)
        return Response(status_code=204, headers={"Set-Cookie": _key_cookie(key, None, secure)})

    async def _file(self, request: Request) -> tuple[Response, str]:
        """The answer to a request under FILES_PREFIX, and what it served (for the log)."""
        if request.method not in FILE_METHODS:
            return PlainTextResponse("GET or HEAD\n", 405, {"Allow": ", ".join(FILE_METHODS)}), ""
        parts = request.url.path.removeprefix(FILES_PREFIX).split("/")
        if len(parts) == 1 and parts[0].endswith(ZIP_SUFFIX):
            return self._zip(request, parts[0].removesuffix(ZIP_SUFFIX))
        if len(parts) != 2:
            raise NotFound("no such file: the paths are /files/<job>/<name> and /files/<job>.zip")
        job_id, name = parts
        self._auth.check_job(self._caller(request), job_id)
        artifact = self._jobs.artifact(job_id, name)
        job = self._jobs.get(job_id)
        etag = _etag(job, artifact)
        headers = {
            "Accept-Ranges": "bytes",
            "ETag": etag,
            "Last-Modified": job.updated.ToDatetime(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT"),
            "Cache-Control": "private, no-cache",
            "Content-Type": artifact.content_type or "application/octet-stream",
        }
        if request.query_params.get("download"):
            headers["Content-Disposition"] = attachment(name)
        if_range = request.headers.get("if-range")
        try:
            ranged = byte_range(request.headers.get("range"), artifact.size)
        except RangeNotSatisfiable:
            served = f"bytes */{artifact.size}"
            refusal = PlainTextResponse("the range is outside the file\n", 416, {"Content-Range": served})
            return refusal, served
        if ranged is not None and if_range is not None and if_range != etag:
            ranged = None  # the file changed since the client's part of it: all of it again
        first, last = ranged or (0, artifact.size - 1)
        length = last - first + 1
        status = 206 if ranged else 200
        served = f"bytes {first}-{last}/{artifact.size}" if ranged else f"whole {artifact.size} bytes"
        if ranged:
            headers["Content-Range"] = served
        headers["Content-Length"] = str(length)
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers), served
        chunks = self._chunks(job_id, name, first)
        # The first read happens before the answer starts, so a file missing on disk is a 404.
        opened = await anext(chunks, None)
        return StreamingResponse(_cut(opened, chunks, length), status, headers), served

    def _zip(self, request: Request, job_id: str) -> tuple[Response, str]:
        self._auth.check_job(self._caller(request), job_id)
        artifacts = self._jobs.artifacts(job_id)
        if not artifacts:
            raise NotFound(f"job {job_id} has no files yet")
        job = self._jobs.get(job_id)
        song = PurePath(job.filename).stem or job_id
        headers = {"Content-Disposition": attachment(f"{song}{ZIP_SUFFIX}"), "Cache-Control": "private"}
        served = f"zip of {len(artifacts)} files, {sum(a.size for a in artifacts)} bytes"
        if request.method == "HEAD":
            return Response(status_code=200, headers=headers, media_type="application/zip"), served
        when = max(ZIP_EPOCH, job.updated.ToDatetime(UTC).timetuple()[:6])
        return StreamingResponse(
            self._zipped(job_id, artifacts, when), headers=headers, media_type="application/zip"
        ), served

    async def _zipped(
        self, job_id: str, artifacts: list[pb.Artifact], when: tuple[int, ...]
    ) -> AsyncIterator[bytes]:
        """A ZIP (stored: audio does not compress) of the artifacts, made as it is sent."""
        sink = _Sink()
        with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED) as archive:
            for artifact in artifacts:
                member = zipfile.ZipInfo(artifact.name, date_time=when)
                member.file_size = artifact.size  # decides whether the member needs ZIP64
                with archive.open(member, "w") as out:
                    async for chunk in self._chunks(job_id, artifact.name, 0):
                        out.write(chunk.data)
                        metrics.DOWNLOAD_BYTES.inc(len(chunk.data))
                        for data in sink.take():
                            yield data
                for data in sink.take():
                    yield data
        for data in sink.take():
            yield data

    async def _chunks(self, job_id: str, name: str, offset: int) -> AsyncGenerator[pb.DownloadChunk, None]:
        """Jobs.download's chunks: its checks read the store on the event loop's thread (where the
        store lives), its file reads run in worker threads."""
        chunks = self._jobs.download(job_id, name, offset)
        try:
            chunk = next(chunks, None)
            while chunk is not None:
                yield chunk
                chunk = await run_in_threadpool(next, chunks, None)
        finally:
            chunks.close()


async def _cut(
    first: pb.DownloadChunk | None, rest: AsyncGenerator[pb.DownloadChunk, None], length: int
) -> AsyncIterator[bytes]:
    """The first `length` bytes of the chunks' data; the file is closed once they are sent."""
    try:
        chunk = first
        while chunk is not None and length > 0:
            data = chunk.data[:length]
            length -= len(data)
            metrics.DOWNLOAD_BYTES.inc(len(data))
            yield data
            chunk = await anext(rest, None) if length > 0 else None
    finally:
        await rest.aclose()
