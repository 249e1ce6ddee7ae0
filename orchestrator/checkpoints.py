"""The stages' checkpoints. StemWindows take the windows a Separate call streams, append them to
the stems' checkpoint files and commit each complete window (every stem of one index) in the
store, so a broken call, another replica or a restarted orchestrator goes on from the first window
not committed, and the stem files are encoded once the last window is in. A VocalsFeed streams the
vocals' checkpoint file to transcription as its windows are committed (the stages overlap), and
Passages commit each passage a Transcribe call sends, so a retried or resumed call sends them back
as done instead of having them transcribed again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from orchestrator.artifacts import PCM_DTYPE, StemCheckpoints, file_name
from orchestrator.stages import StageFailed
from orchestrator.store import Checkpoint, Store
from roar.service import CHUNK_BYTES
from roar.v1 import common_pb2, separation_pb2, transcription_pb2
from roar.v1 import orchestrator_pb2 as pb

log = logging.getLogger("roar.orchestrator")
STAGE = pb.STAGE_SEPARATION
VOCALS = "vocals"
# The most bytes of passages kept as the transcription's checkpoint: a retry sends them all in its
# options message (16 MiB at most, roar.channel_options.CHANNEL_OPTIONS). Past it, passages are not
# committed and a retry transcribes from the last one committed.
MAX_PASSAGE_BYTES = 4 * 1024 * 1024


def _layout_of(result: separation_pb2.SeparationResult) -> separation_pb2.SeparationResult:
    """What the windows hold, without what may differ between calls of the same song (the
    model name as a replica spells it, the input's description)."""
    return separation_pb2.SeparationResult(
        stems=result.stems,
        sample_rate=result.sample_rate,
        channels=result.channels,
        frames=result.frames,
        window_count=result.window_count,
    )


def _bad(what: str) -> StageFailed:
    return StageFailed("INTERNAL", f"the separation service sent {what}")


class StemWindows:
    """A stages.Receiver for Separate, resuming from the job's checkpoint in the store."""

    def __init__(self, store: Store, job_id: str, directory: Path, vocals: VocalsFeed) -> None:
        self._store = store
        self._job_id = job_id
        self._dir = directory
        self._vocals = vocals
        self.layout: separation_pb2.SeparationResult | None = None
        self.files: StemCheckpoints | None = None
        self.windows_done = 0
        self.frames_done = 0
        checkpoint = store.checkpoint(job_id, STAGE)
        if checkpoint is not None:
            self._use(separation_pb2.SeparationResult.FromString(checkpoint.layout))
            on_disk = self.files.frames_on_disk() if self.files else 0
            if on_disk >= checkpoint.frames_done:
                self.windows_done, self.frames_done = checkpoint.windows_done, checkpoint.frames_done
            else:  # the files lost what the store says they hold: nothing can be trusted
                log.warning("job %s: the separation checkpoint files are short; starting again", job_id)
                self._store.drop_checkpoint(job_id, STAGE)
                self.layout = self.files = None
        self.resumed_from = self.windows_done
        self._tell_vocals()
        # This try: whether the SeparationResult came, and the stems of the window under way.
        self._result_seen = False
        self._window_stems: list[str] = []
        self._window_frames = 0

    def _use(self, layout: separation_pb2.SeparationResult) -> None:
        self.layout = layout
        self.files = StemCheckpoints(self._dir, layout.stems, layout.channels)

    @property
    def first_window(self) -> int:
        return self.windows_done

    @property
    def complete(self) -> bool:
        return self.layout is not None and self.windows_done == self.layout.window_count

    def kept(self) -> int:
        return self.windows_done

    def retry_note(self) -> str:
        if self.layout is None:
            return ""
        return f", resuming from window {self.windows_done} of {self.layout.window_count}"

    def start_try(self) -> None:
        if self._window_stems:
            log.info(
                "job %s: separation broke in window %d (%d of %d stems received): that window is redone",
                self._job_id,
                self.windows_done,
                len(self._window_stems),
                len(self.layout.stems) if self.layout else 0,
            )
        if self.files is not None:
            self.files.truncate(self.frames_done)  # drops a window the broken try half-sent
        self._result_seen = False
        self._window_stems = []
        self._window_frames = 0

    async def receive(self, response: separation_pb2.SeparateResponse) -> None:
        kind = response.WhichOneof("response")
        if kind == "result":
            self._take_result(response.result)
        elif kind == "window":
            await self._take_window(response.window)
        else:
            raise _bad(f"a response this orchestrator does not know ({kind})")

    def _take_result(self, result: separation_pb2.SeparationResult) -> None:
        layout = _layout_of(result)
        if self._result_seen:
            raise _bad("its SeparationResult twice")
        if not (layout.stems and layout.sample_rate > 0 and layout.channels > 0 and layout.window_count > 0):
            raise _bad(f"a SeparationResult without stems, rate, channels or windows: {layout}")
        if len(set(layout.stems)) != len(layout.stems):
            raise _bad(f"a stem name twice: {list(layout.stems)}")
        for stem in layout.stems:
            file_name(stem)
        if self.layout is not None and layout != self.layout:
            # Another replica (another version) windows the song differently: start again.
            log.warning("job %s: the separation windows changed; starting again from window 0", self._job_id)
            self._store.drop_checkpoint(self._job_id, STAGE)
            assert self.files is not None
            self.files.remove()
            self.layout = self.files = None
            self.windows_done = self.frames_done = 0
            raise StageFailed(
                "UNAVAILABLE",
                "the separation service changed how it windows the song",
                broken=True,
                answered=True,
            )
        if self.layout is None:
            self._use(layout)
            assert self.files is not None
            self.files.truncate(0)
            self._commit()
        self._result_seen = True

    async def _take_window(self, window: separation_pb2.StemWindow) -> None:
        if not self._result_seen or self.layout is None or self.files is None:
            raise _bad("a window before its SeparationResult")
        if window.index != self.windows_done:
            raise _bad(f"window {window.index} where window {self.windows_done} was due")
        expected_stem = self.layout.stems[len(self._window_stems)]
        if window.stem != expected_stem:
            raise _bad(f"stem {window.stem!r} of window {window.index} where {expected_stem!r} was due")
        if window.start_frame != self.frames_done:
            raise _bad(
                f"window {window.index} starting at frame {window.start_frame}, not {self.frames_done}"
            )
        frame_bytes = self.layout.channels * PCM_DTYPE.itemsize
        frames, rest = divmod(len(window.pcm), frame_bytes)
        if rest or frames == 0:
            raise _bad(f"window {window.index} of {window.stem!r} with {len(window.pcm)} bytes of PCM")
        if self._window_stems and frames != self._window_frames:
            raise _bad(f"window {window.index} with stems of different lengths")
        if self.frames_done + frames > self.layout.frames:
            raise _bad(f"window {window.index} reaching past the song's {self.layout.frames} frames")
        await asyncio.to_thread(self.files.append, window.stem, window.pcm)
        self._window_stems.append(window.stem)
        self._window_frames = frames
        if len(self._window_stems) < len(self.layout.stems):
            return
        self.windows_done += 1
        self.frames_done += frames
        self._window_stems = []
        if self.complete and self.frames_done != self.layout.frames:
            raise _bad(f"windows of {self.frames_done} frames for a song of {self.layout.frames}")
        self._commit()

    def _commit(self) -> None:
        assert self.layout is not None
        checkpoint = Checkpoint(self.layout.SerializeToString(), self.windows_done, self.frames_done)
        self._store.set_checkpoint(self._job_id, STAGE, checkpoint)
        self._tell_vocals()

    def _tell_vocals(self) -> None:
        if self.layout is not None and self.files is not None and VOCALS in self.layout.stems:
            self._vocals.commit(self.files.path(VOCALS), self.layout, self.frames_done)

    def drop_other_stems(self) -> None:
        """Removes the checkpoint files of every stem but the vocals (transcription may still be
        reading those) once the stem files are encoded."""
        assert self.files is not None
        for stem in self.files.stems:
            if stem != VOCALS:
                self.files.path(stem).unlink(missing_ok=True)

    async def encode(self, ext: str) -> list[str]:
        """Every stem's file (`<stem>.<ext>`) from the checkpoint files; the names written."""
        assert self.complete and self.layout is not None and self.files is not None
        names = []
        for stem in self.layout.stems:
            name = f"{stem}.{ext}"
            await asyncio.to_thread(self.files.encode, stem, self._dir / name, ext, self.layout.sample_rate)
            names.append(name)
        return names


class VocalsFeed:
    """The vocals' checkpoint file as separation commits it: a Transcribe call streams it as raw
    PCM up to the committed frames, waits for the next window, and ends its request stream once
    the last window is in. Committed frames never change, so a reader never sees a window a
    broken separation call half-sent."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.layout: separation_pb2.SeparationResult | None = None
        self.frames = 0
        # Set (and replaced) at every commit: wakes the readers waiting for more.
        self._changed = asyncio.Event()

    @property
    def complete(self) -> bool:
        return self.layout is not None and self.frames == self.layout.frames

    def share(self) -> float:
        """The part of the vocals committed so far (1 once they are complete, or when the vocals
        come from their encoded file)."""
        if self.layout is None or not self.layout.frames:
            return 1.0
        return self.frames / self.layout.frames

    def commit(self, path: Path, layout: separation_pb2.SeparationResult, frames: int) -> None:
        self.path, self.layout, self.frames = path, layout, frames
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for_samples(self) -> None:
        """Returns once some vocals are committed."""
        while self.frames == 0:
            await self._changed.wait()

    def pcm_layout(self) -> transcription_pb2.PcmLayout:
        assert self.layout is not None
        return transcription_pb2.PcmLayout(sample_rate=self.layout.sample_rate, channels=self.layout.channels)

    async def requests(
        self, options: transcription_pb2.TranscriptionOptions
    ) -> AsyncIterator[transcription_pb2.TranscribeRequest]:
        """A Transcribe request stream: the options, then the vocals from their first frame, in
        chunks as they are committed; it ends after the last frame."""
        assert self.path is not None and self.layout is not None
        yield transcription_pb2.TranscribeRequest(options=options)
        frame_bytes = self.layout.channels * PCM_DTYPE.itemsize
        chunk = CHUNK_BYTES - CHUNK_BYTES % frame_bytes  # whole frames in every chunk
        sent = 0
        with self.path.open("rb") as file:
            while True:
                committed = self.frames * frame_bytes
                if sent < committed:
                    piece = await asyncio.to_thread(file.read, min(chunk, committed - sent))
                    if not piece:
                        raise StageFailed("INTERNAL", "the vocals' checkpoint file is shorter than committed")
                    sent += len(piece)
                    yield transcription_pb2.TranscribeRequest(audio=piece)
                elif self.complete:
                    return
                else:
                    await self._changed.wait()


class Passages:
    """A stages.Receiver for Transcribe: commits each passage in the store as it arrives (up to
    MAX_PASSAGE_BYTES) and keeps the Transcript that ends the call; `done` is what a retry sends
    back as options.done."""

    def __init__(self, store: Store, job_id: str) -> None:
        self._store = store
        self._job_id = job_id
        self.done = [transcription_pb2.Passage.FromString(data) for data in store.passages(job_id)]
        self._bytes = sum(p.ByteSize() for p in self.done)
        self._full = False  # a passage did not fit: none after it is committed either
        self._next = len(self.done)  # the index the next passage of this try must have
        self.transcript: common_pb2.Transcript | None = None

    def start_try(self) -> None:
        self._next = len(self.done)
        self.transcript = None

    async def receive(self, response: transcription_pb2.TranscribeResponse) -> None:
        kind = response.WhichOneof("response")
        if kind == "transcript":
            self.transcript = response.transcript
        elif kind == "passage":
            passage = response.passage
            if passage.index != self._next:
                raise StageFailed(
                    "INTERNAL",
                    f"the transcription service sent passage {passage.index} where {self._next} was due",
                )
            self._next += 1
            if self._full or passage.index != len(self.done):
                return
            if self._bytes + passage.ByteSize() > MAX_PASSAGE_BYTES:
                self._full = True
                log.info(
                    "job %s: passages from %d on are not checkpointed (over MAX_PASSAGE_BYTES)",
                    self._job_id,
                    passage.index,
                )
                return
            self._store.add_passage(self._job_id, passage.index, passage.SerializeToString())
            self.done.append(passage)
            self._bytes += passage.ByteSize()
        else:
            raise StageFailed(
                "INTERNAL",
                f"the transcription service sent a response this orchestrator does not know ({kind})",
            )

    def kept(self) -> int:
        return len(self.done)

    def retry_note(self) -> str:
        return f", resuming after passage {len(self.done)}" if self.done else ""
