"""The separation stage's checkpoint: StemWindows take the windows a Separate call streams, append
them to the stems' checkpoint files and commit each complete window (every stem of one index) in
the store, so a broken call, another replica or a restarted orchestrator goes on from the first
window not committed, and the stem files are encoded once the last window is in."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from orchestrator.artifacts import PCM_DTYPE, StemCheckpoints, file_name
from orchestrator.stages import StageFailed
from orchestrator.store import Checkpoint, Store
from roar.v1 import orchestrator_pb2 as pb
from roar.v1 import separation_pb2

log = logging.getLogger("roar.orchestrator")
STAGE = pb.STAGE_SEPARATION


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

    def __init__(self, store: Store, job_id: str, directory: Path) -> None:
        self._store = store
        self._job_id = job_id
        self._dir = directory
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

    async def encode(self, ext: str) -> list[str]:
        """Every stem's file (`<stem>.<ext>`) from the checkpoint files; the names written."""
        assert self.complete and self.layout is not None and self.files is not None
        names = []
        for stem in self.layout.stems:
            name = f"{stem}.{ext}"
            await asyncio.to_thread(self.files.encode, stem, self._dir / name, ext, self.layout.sample_rate)
            names.append(name)
        return names
