"""The page's job controls in a real browser (Debian's headless Chromium, Playwright) against a real
`roar up` with tiny models: Pause stops a job mid-separation and shows it Paused, Resume takes it to
the end; Retry reruns only the stage that failed. Screenshot: tests/screenshots/paused.png."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from roar import client
from roar.config import port_of
from roar.v1 import orchestrator_pb2 as pb
from roar.v1 import orchestrator_pb2_grpc as pb_grpc
from tests import test_browser
from tests.support.songs import write_song
from tests.support.suite import Suite
from tests.test_browser import (
    JOB_SECONDS,
    STAGES,
    expect,
    screenshot,
    server_job,
    shown_item,
    stage,
    stage_log,
    upload,
    wait_for_stage_progress,
)
from tests.test_crash import service_pid

# test_browser's fixtures: the browser, and a fresh page on the suite.
browser = test_browser.browser
page = test_browser.page

pytestmark = pytest.mark.browser

# Separation's percent a job is paused after.
PAUSE_AFTER_PERCENT = 25
# A paused job's separation must not move for this long (seconds).
STILL_SECONDS = 3.0
# The time limit of the job whose transcription is stopped: it fails at this deadline, if the stage
# call has not failed before (seconds).
STALLED_JOB_TIMEOUT = 25.0


def separation_percent(item: Any) -> float:
    return float(item.get_by_test_id("stage-separation-bar").get_attribute("aria-valuenow"))


def server_events(suite: Suite, job_id: str, after_seq: int = 0) -> list[pb.ProgressEvent]:
    with grpc.insecure_channel(suite.address) as channel:
        stub = pb_grpc.OrchestratorStub(channel)
        return list(stub.WatchJob(pb.WatchJobRequest(job_id=job_id, after_seq=after_seq), timeout=30))


def test_pause_mid_separation_then_resume_to_the_end(page: Any, suite: Suite, tmp_path: Path) -> None:
    item = upload(page, write_song(tmp_path / "pausing.wav", 40.0))
    item.get_by_test_id("process-button").click()
    wait_for_stage_progress(page, item, "separation")
    # Past a window or two, so that the pause has a checkpoint to go on from.
    bar = item.get_by_test_id("stage-separation-bar")
    page.wait_for_function(
        f"bar => Number(bar.getAttribute('aria-valuenow')) > {PAUSE_AFTER_PERCENT}", arg=bar.element_handle()
    )
    expect(item.get_by_test_id("resume-job")).to_be_hidden()
    item.get_by_test_id("pause-job").click()

    chip = item.get_by_test_id("job-state")
    expect(chip).to_have_attribute("data-state", "paused")
    expect(chip).to_have_text("Paused")
    expect(page.locator("[data-testid=job-entry][data-state=paused]")).to_have_count(1)
    # The stage it stopped in is held where it was.
    expect(stage(item, "separation")).to_have_attribute("data-state", "paused")
    expect(item.get_by_test_id("stage-separation-bar")).to_have_attribute("data-state", "paused")
    expect(item.get_by_test_id("pause-job")).to_be_hidden()
    expect(item.get_by_test_id("resume-job")).to_be_visible()
    job_id = item.get_attribute("data-job-id")
    paused = server_job(suite, job_id)
    assert paused.state == pb.JOB_STATE_PAUSED
    # Stopped: neither the page nor the server moves on.
    held = separation_percent(item)
    assert 0 < held < 100
    time.sleep(STILL_SECONDS)
    assert separation_percent(item) == held
    assert server_job(suite, job_id).last_event.seq == paused.last_event.seq
    screenshot(page, "paused.png")

    item.get_by_test_id("resume-job").click()
    expect(stage(item, "complete")).to_have_attribute("data-state", "done", timeout=JOB_SECONDS)
    expect(chip).to_have_attribute("data-state", "succeeded")
    for name in STAGES:
        expect(stage(item, name)).to_have_attribute("data-state", "done")
    assert server_job(suite, job_id).state == pb.JOB_STATE_SUCCEEDED
    messages = [e.message for e in server_events(suite, job_id, paused.last_event.seq)]
    assert "resumed: going on from where it was paused" in messages
    # The separation went on from its checkpoint, not from the start.
    assert any(m.startswith("separation resuming from window ") for m in messages), messages


def partial_job_with_transcription_stopped(suite: Suite, song: Path) -> str:
    """A job whose transcription failed because its stage process was stopped (SIGSTOP) while the
    job ran; the stage goes on (SIGCONT) once the job has ended. Its job id."""
    port = port_of(suite.stage_addresses["transcription"])
    transcription = service_pid("services.transcription.server", port)

    async def run() -> str:
        async with client.channel(suite.address) as channel:
            stub = pb_grpc.OrchestratorStub(channel)
            uploaded = await client.upload_file(stub, song)
            options = pb.JobOptions(timeout_seconds=STALLED_JOB_TIMEOUT)
            events = [e async for e in client.process(stub, uploaded.upload_id, options)]
            return events[-1].job_id

    os.kill(transcription, signal.SIGSTOP)
    try:
        # Playwright's sync API holds this thread's event loop: the asyncio client runs in a thread.
        with ThreadPoolExecutor(1) as pool:
            job_id = pool.submit(asyncio.run, run()).result()
    finally:
        os.kill(transcription, signal.SIGCONT)
    return job_id


def test_retry_reruns_only_the_stage_that_failed(page: Any, suite: Suite, tmp_path: Path) -> None:
    job_id = partial_job_with_transcription_stopped(suite, write_song(tmp_path / "retried.wav", 4.0))
    failed = server_job(suite, job_id)
    assert failed.state == pb.JOB_STATE_PARTIAL, failed
    assert [e.stage for e in failed.errors] == [pb.STAGE_TRANSCRIPTION]

    page.reload()  # the page lists the jobs the server holds
    page.locator(f"[data-testid=job-entry][data-job-id='{job_id}'] button").click()
    item = shown_item(page)
    expect(item.get_by_test_id("job-state")).to_have_attribute("data-state", "partial")
    expect(stage(item, "separation")).to_have_attribute("data-state", "done")
    expect(stage(item, "transcription")).to_have_attribute("data-state", "failed")
    expect(item.get_by_test_id("pause-job")).to_be_hidden()
    item.get_by_test_id("retry-job").click()

    expect(stage(item, "complete")).to_have_attribute("data-state", "done", timeout=JOB_SECONDS)
    for name in STAGES:
        expect(stage(item, name)).to_have_attribute("data-state", "done")
    expect(item.get_by_test_id("retry-job")).to_be_hidden()
    assert not item.get_by_test_id("stage-transcription-error").text_content()
    # On the page, separation never ran again while transcription did.
    log = stage_log(page, job_id)
    assert ("separation", "processing") not in {(what, state) for what, state, _ in log}
    assert ("transcription", "processing") in {(what, state) for what, state, _ in log}

    retried = server_job(suite, job_id)
    assert retried.state == pb.JOB_STATE_SUCCEEDED and not retried.errors
    rerun = server_events(suite, job_id, failed.last_event.seq)
    assert rerun[0].message == "queued again: retrying transcription, karaoke"
    assert {e.stage for e in rerun} >= {pb.STAGE_TRANSCRIPTION, pb.STAGE_KARAOKE}
    assert pb.STAGE_SEPARATION not in {e.stage for e in rerun}
    assert {"vocals.wav", "lyrics.lrc"} <= {a.name for a in retried.artifacts}
