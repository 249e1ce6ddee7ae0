"""The karaoke player in a real browser (Debian's headless Chromium) against a real `roar up` with tiny
models: stems streamed by URL into a mixer whose gains change what is heard, tempo on every element
keeping pitch, the key shifter's worklet measured on a sine, the full-screen lyrics with the countdown,
and the keys.

Screenshots: tests/screenshots/player.png (the mixer with the lyrics) and fullscreen.png."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from roar import audio
from tests import test_browser
from tests.support.songs import make_song, write_song
from tests.support.suite import Suite, create_key, job_made_through_the_api

pytestmark = pytest.mark.browser
# test_browser's fixtures, by name in this module so that pytest finds them: the browser, and a fresh
# page on the suite.
browser = test_browser.browser
page = test_browser.page
expect = test_browser.expect
SAMPLE_RATE = 44100

# A two-tap shifter's phase slips at each cross-fade unless the window is a whole number of the tone's
# periods (440 Hz: it is; 347 Hz: not), which counts as up to a few % of extra or missing crossings.
# A sine through the page's own pitch-shifter worklet in an OfflineAudioContext; its frequency from
# the upward zero crossings after the first 0.1 s (the delay line filling).
MEASURE_SHIFT = """async ([semitones, frequency]) => {
  const rate = 44100;
  const context = new OfflineAudioContext(1, rate * 1.1, rate);
  await context.audioWorklet.addModule("pitch-worklet.js");
  const shifter = new AudioWorkletNode(context, "pitch-shifter", { outputChannelCount: [1] });
  shifter.parameters.get("semitones").value = semitones;
  const sine = new OscillatorNode(context, { frequency });
  sine.connect(shifter).connect(context.destination);
  sine.start();
  const samples = (await context.startRendering()).getChannelData(0).subarray(rate / 10);
  let crossings = 0;
  let peak = 0;
  for (let i = 1; i < samples.length; i++) {
    if (samples[i - 1] < 0 && samples[i] >= 0) crossings++;
    peak = Math.max(peak, Math.abs(samples[i]));
  }
  return { frequency: crossings / (samples.length / rate), peak };
}"""


@pytest.mark.parametrize("semitones", [12, -12, 3, -5, 0])
@pytest.mark.parametrize("frequency", [440.0, 347.0])
def test_the_key_shifter_moves_the_pitch_by_semitones(page: Any, semitones: int, frequency: float) -> None:
    measured = page.evaluate(MEASURE_SHIFT, [semitones, frequency])
    expected = frequency * 2 ** (semitones / 12)
    assert measured["frequency"] == pytest.approx(expected, rel=0.03), measured
    assert measured["peak"] > 0.5, measured


LYRICS = "sing a song of roar\nevery word in time"
# Kilobytes a second the page may fetch at while it starts the player: a stem takes seconds to arrive.
THROTTLED_BYTES_PER_SECOND = 100_000


def song_after_a_silence(path: Path, silence: float, seconds: float) -> Path:
    """A test song that starts after `silence` seconds of nothing, so that its first line has a
    countdown to show."""
    music = make_song(seconds)
    quiet = np.zeros((music.shape[0], int(silence * SAMPLE_RATE)), dtype=np.float32)
    path.write_bytes(audio.encode(np.concatenate([quiet, music], axis=1), SAMPLE_RATE, "wav"))
    return path


def finished_job(page: Any, song: Path, all_stems: bool = False) -> Any:
    item = test_browser.upload(page, song)
    item.get_by_test_id("opt-lyrics").fill(LYRICS)
    if all_stems:
        item.get_by_test_id("opt-all-stems").check()
    item.get_by_test_id("process-button").click()
    expect(test_browser.stage(item, "complete")).to_have_attribute(
        "data-state", "done", timeout=test_browser.JOB_SECONDS
    )
    return item


def throttle(page: Any, bytes_per_second: int) -> None:
    """Chromium's network emulation: every response arrives at this rate (-1: as fast as it can)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": bytes_per_second, "uploadThroughput": -1},
    )


def retime(
    lines: list[dict[str, Any]], words: list[dict[str, Any]], spans: list[tuple[float, float]]
) -> None:
    """Gives each line the (start, end) in `spans`, its words in equal parts of it."""
    for line, (start, end) in zip(lines, spans, strict=True):
        step = (end - start) / len(line["words"])
        for k, index in enumerate(line["words"]):
            words[index].update(start=start + k * step, end=start + (k + 1) * step)
        line.update(start=start, end=end)


def fulfil_with(data: Any) -> Callable[[Any], None]:
    return lambda route: route.fulfill(json=data)


def stem(item: Any, name: str) -> Any:
    return item.locator(f"[data-testid=stem-control][data-stem={name}]")


def gain(item: Any, name: str) -> float:
    return float(stem(item, name).get_attribute("data-gain"))


def wait_until_playing(page: Any, clock: Any) -> None:
    page.wait_for_function("clock => !clock.paused && clock.currentTime > 0.2", arg=clock.element_handle())


def test_the_player_streams_mixes_and_shows_the_lyrics(page: Any, suite: Suite, tmp_path: Path) -> None:
    item = finished_job(page, song_after_a_silence(tmp_path / "late-start.wav", 4.0, 8.0))
    job_id = item.get_attribute("data-job-id")
    lines = json.loads(test_browser.server_bytes(suite, job_id, "lines.json"))
    words = json.loads(test_browser.server_bytes(suite, job_id, "words.json"))
    # Tiny random models hear no words, so the aligner spreads the lyrics over the whole song. The
    # page gets the server's files with a real song's timing instead: an intro, a line, a break.
    retime(lines, words, [(4.5, 6.5), (10.7, 11.9)])
    for name, data in (("lines.json", lines), ("words.json", words)):
        page.route(f"**/files/{job_id}/{name}", fulfil_with(data))

    # The stems stream: playing starts while the clock's file has only partly arrived, by ranges.
    throttle(page, THROTTLED_BYTES_PER_SECOND)
    item.get_by_test_id("player-load").click()
    clock = item.get_by_test_id("player-audio")
    wait_until_playing(page, clock)
    arrived, duration = clock.evaluate("a => [a.buffered.end(a.buffered.length - 1), a.duration]")
    assert arrived < duration, "the whole stem was fetched before it played"
    instrumental = clock.get_attribute("src")
    assert instrumental.startswith(f"/files/{job_id}/instrumental.")
    assert re.search(rf"GET '{re.escape(instrumental)}': 206 bytes \d+-\d+/\d+", suite.log())
    throttle(page, -1)

    # The mixer: the instrumental at full, the guide vocal under it; the sliders and mute set the gains.
    controls = item.get_by_test_id("stem-control")
    assert [controls.nth(i).get_attribute("data-stem") for i in range(controls.count())] == [
        "instrumental",
        "vocals",
    ]
    assert (gain(item, "instrumental"), gain(item, "vocals")) == (1.0, pytest.approx(0.2))
    stem(item, "vocals").get_by_test_id("stem-volume").fill("0")
    assert gain(item, "vocals") == 0.0
    stem(item, "vocals").get_by_test_id("stem-volume").fill("100")
    assert gain(item, "vocals") == 1.0
    stem(item, "instrumental").get_by_test_id("stem-mute").click()
    expect(stem(item, "instrumental")).to_have_attribute("data-muted", "true")
    assert gain(item, "instrumental") == 0.0
    stem(item, "instrumental").get_by_test_id("stem-mute").click()
    assert gain(item, "instrumental") == 1.0
    # What to play: the vocals alone, the original (no stem), back to karaoke.
    source = item.get_by_test_id("player-source")
    source.select_option("vocals")
    assert (gain(item, "instrumental"), gain(item, "vocals")) == (0.0, 1.0)
    source.select_option("original")
    assert (gain(item, "instrumental"), gain(item, "vocals")) == (0.0, 0.0)
    source.select_option("instrumental")
    stem(item, "vocals").get_by_test_id("stem-volume").fill("20")

    # Tempo on every element, keeping pitch; the key on the shifter; the stems on one clock.
    player = item.get_by_test_id("player")
    item.get_by_test_id("tempo").fill("75")
    expect(player).to_have_attribute("data-rate", "0.75")
    elements = item.locator("audio[data-stem]")
    assert elements.count() == 3  # instrumental, vocals, original
    rates = elements.evaluate_all("all => all.map(a => [a.playbackRate, a.preservesPitch])")
    assert rates == [[0.75, True]] * 3
    item.get_by_test_id("key").fill("-2")
    expect(player).to_have_attribute("data-semitones", "-2")
    expect(item.get_by_test_id("key-value")).to_have_text("-2")
    clock.evaluate("a => { a.currentTime = 1; return a.play(); }")
    page.wait_for_timeout(1500)
    times = elements.evaluate_all("all => all.map(a => a.currentTime)")
    assert max(times) - min(times) < 0.1, times

    # Keys, with the player focused: pause, seek, the guide vocal, tempo and key.
    player.focus()
    page.keyboard.press("Space")
    expect(clock).to_have_js_property("paused", True)
    clock.evaluate("a => { a.currentTime = 2; }")
    page.keyboard.press("ArrowRight")
    expect(clock).to_have_js_property("currentTime", 7)
    page.keyboard.press("ArrowLeft")
    expect(clock).to_have_js_property("currentTime", 2)
    page.keyboard.press("ArrowUp")
    assert gain(item, "vocals") == pytest.approx(0.3)
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    assert gain(item, "vocals") == pytest.approx(0.1)
    page.keyboard.press("+")
    expect(player).to_have_attribute("data-rate", "0.8")
    page.keyboard.press("-")
    page.keyboard.press("-")
    expect(player).to_have_attribute("data-rate", "0.7")
    page.keyboard.press("]")
    expect(player).to_have_attribute("data-semitones", "-1")
    page.keyboard.press("[")
    page.keyboard.press("[")
    expect(player).to_have_attribute("data-semitones", "-3")
    expect(item.get_by_test_id("key-help")).to_contain_text("Space play/pause")

    # The lyrics with the mixer, in a line being sung.
    line_words = [words[i] for i in lines[1]["words"]]
    clock.evaluate("(a, at) => { a.currentTime = at; }", (line_words[0]["start"] + line_words[0]["end"]) / 2)
    expect(item.get_by_test_id("karaoke-line")).to_have_text(" ".join(w["word"] for w in line_words))
    item.scroll_into_view_if_needed()
    player.screenshot(path=test_browser.SCREENSHOTS / "player.png")
    # On a phone, nothing of the player is wider than the screen.
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.set_viewport_size({"width": 1280, "height": 900})

    # Full screen (F): the first line large with its countdown and the next line below; Esc leaves.
    first = lines[0]
    at = first["start"] - 2.5
    clock.evaluate("(a, at) => { a.currentTime = at; }", at)
    page.keyboard.press("f")
    lyrics = item.get_by_test_id("karaoke-lyrics")
    expect(lyrics).to_have_attribute("data-fullscreen", "native")
    box = lyrics.bounding_box()
    assert (box["width"], box["height"]) == (1280, 900)
    expect(item.get_by_test_id("karaoke-countdown")).to_have_attribute("data-countdown", "3")
    expect(item.get_by_test_id("karaoke-line")).to_have_text(
        " ".join(words[i]["word"] for i in first["words"])
    )
    expect(item.get_by_test_id("karaoke-next")).to_have_text(lines[1]["text"])
    large = item.get_by_test_id("karaoke-line").evaluate(
        "line => parseFloat(getComputedStyle(line).fontSize)"
    )
    assert large >= 48, f"the current line is {large}px over the whole screen"
    test_browser.screenshot(page, "fullscreen.png")
    clock.evaluate("(a, at) => { a.currentTime = at; }", first["start"] - 0.5)
    expect(item.get_by_test_id("karaoke-countdown")).to_have_attribute("data-countdown", "1")
    # The second line comes after a break of over 4 s: a countdown again, and no line after it.
    clock.evaluate("(a, at) => { a.currentTime = at; }", lines[1]["start"] - 1.5)
    expect(item.get_by_test_id("karaoke-countdown")).to_have_attribute("data-countdown", "2")
    expect(item.get_by_test_id("karaoke-line")).to_have_text(" ".join(w["word"] for w in line_words))
    expect(item.get_by_test_id("karaoke-next")).to_have_text("")
    # Keys work over the whole screen.
    page.keyboard.press("Space")
    expect(clock).to_have_js_property("paused", False)
    page.keyboard.press("Space")
    expect(clock).to_have_js_property("paused", True)
    # Left the browser's own way (its Esc, a gesture): the view follows.
    page.evaluate("() => document.exitFullscreen()")
    expect(lyrics).to_have_attribute("data-fullscreen", "")

    # Where the browser refuses full screen, the lyrics cover the window instead.
    page.evaluate(
        "() => { Element.prototype.requestFullscreen = () => Promise.reject(new TypeError('refused')); }"
    )
    item.get_by_test_id("fullscreen-button").click()
    expect(lyrics).to_have_attribute("data-fullscreen", "fallback")
    assert lyrics.bounding_box() == {"x": 0, "y": 0, "width": 1280, "height": 900}
    # On top of the page: a point anywhere is in the lyrics.
    on_top = "() => document.elementFromPoint(5, 5).closest('[data-testid=karaoke-lyrics]') !== null"
    assert page.evaluate(on_top)
    page.keyboard.press("Escape")
    expect(lyrics).to_have_attribute("data-fullscreen", "")


# The RMS above which a stem is heard: the tiny random model's stems are quiet (vocals about 0.002).
HEARD_LEVEL = 0.0005


def level_reaches(page: Any, item: Any, check: str) -> None:
    """Waits, playing from the start, until the level meter (RMS read from an AnalyserNode after the
    mix) passes `check`, a JavaScript condition on `level`."""
    item.get_by_test_id("player-audio").evaluate("a => { a.currentTime = 0; return a.play(); }")
    page.wait_for_function(
        f"meter => {{ const level = Number(meter.dataset.level); return {check}; }}",
        arg=item.get_by_test_id("level-meter").element_handle(),
    )


def test_an_all_stems_job_mixes_each_stem_and_the_level_follows(page: Any, tmp_path: Path) -> None:
    item = finished_job(page, write_song(tmp_path / "four-stems.wav", 10.0, seed=3), all_stems=True)
    # A failed load says why, plays nothing and can be tried again.
    page.route("**/lines.json", lambda route: route.fulfill(status=503))
    item.get_by_test_id("player-load").click()
    expect(item.get_by_test_id("player-status")).to_contain_text("Could not load the player: lines.json: 503")
    expect(item.locator("audio")).to_have_count(0)
    page.unroute("**/lines.json")
    item.get_by_test_id("player-load").click()
    wait_until_playing(page, item.get_by_test_id("player-audio"))
    expect(item.get_by_test_id("player-status")).to_have_text("")
    controls = item.get_by_test_id("stem-control")
    names = [controls.nth(i).get_attribute("data-stem") for i in range(controls.count())]
    # Mixed from the stems (the instrumental is their sum); the vocals, the guide, come last.
    assert sorted(names[:-1]) == ["bass", "drums", "other"] and names[-1] == "vocals", names
    assert [gain(item, name) for name in names] == [1.0, 1.0, 1.0, pytest.approx(0.2)]
    expect(stem(item, "vocals").locator(".slider-name")).to_have_text("Guide vocal")

    # The vocals alone, by muting the rest: heard at 100 %, silent at 0 % (pure karaoke).
    for name in names[:-1]:
        stem(item, name).get_by_test_id("stem-mute").click()
        assert gain(item, name) == 0.0
    vocals = stem(item, "vocals").get_by_test_id("stem-volume")
    vocals.fill("100")
    level_reaches(page, item, f"level > {HEARD_LEVEL}")
    vocals.fill("0")
    level_reaches(page, item, "level === 0")
    # One stem back, at half: heard again.
    stem(item, "drums").get_by_test_id("stem-mute").click()
    stem(item, "drums").get_by_test_id("stem-volume").fill("50")
    assert gain(item, "drums") == 0.5
    level_reaches(page, item, f"level > {HEARD_LEVEL}")


def test_a_keyed_servers_job_plays_with_the_key_cookie(
    browser: Any, keyed_suite: Suite, tmp_path: Path
) -> None:
    """Stems and lyrics come by URL, so with ROAR_AUTH=on they need the key the page hands to
    POST /session; a job made elsewhere has no original song to offer. This browser has no AudioWorklet
    (as on a page served over plain http from another host): the song plays on in its own key."""
    key = create_key(keyed_suite, "dora")
    job = job_made_through_the_api(keyed_suite, write_song(tmp_path / "keyed.wav", 6.0, seed=9), key)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        # What an insecure origin gets: no AudioWorklet at all.
        context.add_init_script(
            "Object.defineProperty(BaseAudioContext.prototype, 'audioWorklet', { get: () => undefined })"
        )
        opened = context.new_page()
        opened.goto(f"{keyed_suite.web_url}#job={job.job_id}")
        opened.get_by_test_id("key-input").fill(key)
        opened.get_by_test_id("key-submit").click()
        item = test_browser.shown_item(opened)
        options = item.get_by_test_id("player-source").locator("option")
        expect(options).to_have_count(2)
        assert [options.nth(i).get_attribute("value") for i in range(2)] == ["instrumental", "vocals"]
        item.get_by_test_id("player-load").click()
        wait_until_playing(opened, item.get_by_test_id("player-audio"))
        expect(item.get_by_test_id("player-status")).to_have_text("")
        expect(item.get_by_test_id("key")).to_be_disabled()
        expect(item.get_by_test_id("player")).to_have_attribute("data-semitones", "0")
        expect(item.locator("audio[data-stem]")).to_have_count(2)
        # Not the instrumental alone: the vocals stream too, from the same clock.
        vocals = item.locator("audio[data-stem=vocals]")
        opened.wait_for_function("a => !a.paused && a.currentTime > 0.2", arg=vocals.element_handle())
    finally:
        context.close()
