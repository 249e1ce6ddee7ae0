"""Transcription quality on sung vocals, with real whisper-tiny.en from ../shared: the committed
synthetic songs' clean vocals stems (separation is tested elsewhere) are transcribed line by line
without hallucinations, and the user's lyrics are timed to within a few tens of milliseconds.
Music or noise without singing yields no words."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from bench.metrics import onset_summary, word_error_rate, word_onset_errors
from roar import audio
from roar.audio import resample, to_mono
from roar.v1 import common_pb2
from services.transcription import vad
from services.transcription.align import transcript_from_lyrics
from services.transcription.transcriber import (
    SAMPLE_RATE,
    load_transcriber,
    prepare_audio,
)
from services.transcription.whisper import WhisperTranscriber

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WHISPER_TINY_EN = SHARED / "models" / "whisper-tiny.en"
SONGS = Path(__file__).resolve().parent / "data" / "songs"

pytestmark = [
    pytest.mark.shared,
    pytest.mark.skipif(not WHISPER_TINY_EN.is_dir(), reason=f"needs whisper-tiny.en in {SHARED}"),
]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Other test processes share the cores: one thread keeps these tests steady."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_en() -> WhisperTranscriber:
    transcriber = load_transcriber(str(WHISPER_TINY_EN), "cpu")
    assert isinstance(transcriber, WhisperTranscriber)
    return transcriber


def song_vocals(name: str) -> tuple[np.ndarray, dict]:
    return prepare_audio((SONGS / name / "vocals.flac").read_bytes()), json.loads(
        (SONGS / name / "truth.json").read_text()
    )


def timed_words(transcript: common_pb2.Transcript) -> list[dict]:
    return [{"word": w.text, "start": w.start} for s in transcript.segments for w in s.words]


@pytest.mark.parametrize("name", ["song_000", "song_001"])
def test_sung_vocals_are_transcribed_line_by_line(tiny_en: WhisperTranscriber, name: str) -> None:
    vocals, truth = song_vocals(name)
    transcript = tiny_en.transcribe(vocals)
    words = [w for s in transcript.segments for w in s.words]

    assert word_error_rate(truth["lyrics"], " ".join(w.text for w in words)) <= 0.20
    # Every line is heard: Whisper does not stop after the first one.
    for line in truth["lines"]:
        assert sum(line["start"] - 0.5 <= w.start <= line["end"] + 0.5 for w in words) >= 3, line["text"]
    assert all(0.0 < w.confidence <= 1.0 for w in words)


@pytest.mark.parametrize("name", ["song_000", "song_001"])
def test_lyrics_given_are_timed_to_the_singing(name: str) -> None:
    vocals, truth = song_vocals(name)

    def no_transcription(progress: object) -> common_pb2.Transcript:
        raise AssertionError("the lyrics should align")

    transcript = transcript_from_lyrics(vocals, truth["lyrics"], "en", no_transcription)
    errors = word_onset_errors(truth["words"], timed_words(transcript))
    summary = onset_summary(errors)
    assert summary["count"] == len(truth["words"])
    assert summary["median"] <= 0.080
    assert summary["within_0_2"] >= 0.90


def band_of(name: str) -> np.ndarray:
    """A song's band alone (mixture − vocals): drums, bass and chords, no voice; 16 kHz mono."""
    mixture, rate = soundfile.read(SONGS / name / "mixture.flac", dtype="int16", always_2d=True)
    vocals, _ = soundfile.read(SONGS / name / "vocals.flac", dtype="int16", always_2d=True)
    band = (mixture.astype(np.int32) - vocals).astype(np.float32).T / 32768.0
    return resample(to_mono(band), rate, SAMPLE_RATE)


@pytest.mark.parametrize("level", [0.0, 0.02, 0.2])
def test_silence_and_noise_have_no_words(tiny_en: WhisperTranscriber, level: float) -> None:
    noise = level * np.random.default_rng(0).standard_normal(10 * SAMPLE_RATE).astype(np.float32)
    assert not tiny_en.transcribe(noise).segments


def test_music_without_singing_has_no_words(tiny_en: WhisperTranscriber) -> None:
    assert not tiny_en.transcribe(band_of("song_000")).segments


def test_music_taken_for_singing_yields_no_words(
    tiny_en: WhisperTranscriber, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Were the band's bleed in a separated vocals stem taken for singing (the voice activity detector
    finds none in this one), Whisper would hear it: its guess ("Thanks for watching guys!") goes."""
    monkeypatch.setattr(vad, "speech_regions", lambda audio, options=None: [(0.0, 8.0)])
    assert not tiny_en.transcribe(band_of("song_000")).segments


def test_a_quiet_line_in_a_quiet_stem_is_transcribed_at_its_times(tiny_en: WhisperTranscriber) -> None:
    """song_000's vocals with its second line 8 dB under the others, its band bleeding in, and the
    whole stem 40 dB down (a quiet voice as separation leaves it), prepared as the service prepares
    every stem: the quiet line is heard, its words near their true times."""
    vocals, rate = soundfile.read(SONGS / "song_000" / "vocals.flac", dtype="float32", always_2d=True)
    vocals = resample(to_mono(vocals.T), rate, SAMPLE_RATE)
    truth = json.loads((SONGS / "song_000" / "truth.json").read_text())
    quiet_line = truth["lines"][1]
    quiet = slice(
        round((quiet_line["start"] - 0.3) * SAMPLE_RATE), round((quiet_line["end"] + 0.3) * SAMPLE_RATE)
    )
    vocals[quiet] *= 10.0 ** (-8.0 / 20.0)
    band = band_of("song_000")[: len(vocals)]
    stem = 0.01 * (vocals + 0.1 * band)
    transcript = tiny_en.transcribe(prepare_audio(audio.encode(stem[None, :], SAMPLE_RATE, "wav")))

    line_words = [w for w in truth["words"] if quiet_line["start"] <= w["start"] < quiet_line["end"]]
    errors = word_onset_errors(line_words, timed_words(transcript))
    assert len(errors) >= len(line_words) - 2, (quiet_line["text"], timed_words(transcript))
    assert np.median(errors) <= 0.2, errors
    assert word_error_rate(truth["lyrics"], " ".join(w["word"] for w in timed_words(transcript))) <= 0.3
