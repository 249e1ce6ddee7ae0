"""The transcription service's input with bounded memory: a vocals file decoded, mixed down and
resampled block by block (roar.audio.mono_blocks) into 16 kHz audio kept on disk (vocals.VocalsFile),
which voice detection and the windows read a stretch at a time: the same samples and regions as the
whole-array path, a peak memory that does not grow with the song, and a run that stops while it
decodes when cancelled."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from roar import audio
from roar.errors import BadInput
from roar.progress import no_progress
from roar.v1 import transcription_pb2
from services.transcription import vad
from services.transcription.transcribe import transcribe_song
from services.transcription.vocals import read_vocals
from services.transcription.windows import windows
from tests.support.stopping import stop_at_first_update

ROOT = Path(__file__).resolve().parents[1]
SONG = ROOT / "tests" / "data" / "songs" / "song_000"
SAMPLE_RATE = vad.SAMPLE_RATE
# A stopped run stops this soon (as in test_stopping).
STOP_SECONDS = 2.0
# The long input's peak memory may exceed the short one's by this factor at most (issue 9's bound).
PEAK_RATIO = 1.2


def random_audio(rate: int, channels: int, frames: int, seed: int = 0) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal((channels, frames))).astype(np.float32)


def whole_array_input(data: bytes) -> np.ndarray:
    """The transcription input as it was made before: decoded whole, mixed down, resampled whole."""
    decoded = audio.decode(data)
    return audio.resample(audio.to_mono(decoded.audio), decoded.sample_rate, SAMPLE_RATE)


@pytest.mark.parametrize(
    ("rate", "channels", "frames"),
    [
        (44100, 2, 44100 * 10 + 17),  # several output blocks
        (48000, 1, 48000 * 2 + 5),
        (22050, 2, 10),  # shorter than the resampler's context
        (8000, 2, 8000 * 2 + 1),  # upsampled
        (16000, 6, 16000 + 3),  # no resampling; six channels mixed down
    ],
)
def test_blocks_join_to_the_whole_file_resample(rate: int, channels: int, frames: int) -> None:
    data = audio.encode(random_audio(rate, channels, frames), rate, "flac")
    whole = whole_array_input(data)
    blocks = list(audio.mono_blocks(io.BytesIO(data), SAMPLE_RATE))
    assert all(block.dtype == np.float32 and block.ndim == 1 for block in blocks)
    assert len(blocks) >= min(len(whole) // audio.BLOCK_FRAMES, 2)
    joined = np.concatenate(blocks)
    assert joined.shape == whole.shape
    # Each block is resampled with its neighbours' context: the same sums, to float rounding.
    np.testing.assert_allclose(joined, whole, rtol=0, atol=1e-6)


def test_a_path_and_a_file_give_the_same_blocks(tmp_path: Path) -> None:
    path = tmp_path / "vocals.flac"
    path.write_bytes((SONG / "vocals.flac").read_bytes())
    with path.open("rb") as file:
        from_file = np.concatenate(list(audio.mono_blocks(file, SAMPLE_RATE)))
    from_path = np.concatenate(list(audio.mono_blocks(path, SAMPLE_RATE)))
    np.testing.assert_array_equal(from_file, from_path)
    assert len(from_path) == round(sf.info(str(path)).duration * SAMPLE_RATE)


def test_bad_files_are_bad_input() -> None:
    long_silence = audio.encode(np.zeros((2, 44100 * 61), np.float32), 44100, "flac")
    with pytest.raises(BadInput, match="ROAR_MAX_AUDIO_MINUTES"):
        next(audio.mono_blocks(io.BytesIO(long_silence), SAMPLE_RATE, max_seconds=60))
    with pytest.raises(BadInput, match="not an audio file"):
        next(audio.mono_blocks(io.BytesIO(b"this is not audio" * 100), SAMPLE_RATE))
    empty = io.BytesIO()
    sf.write(empty, np.zeros((0, 1), np.float32), 16000, format="WAV")
    with pytest.raises(BadInput, match="no samples"):
        next(audio.mono_blocks(io.BytesIO(empty.getvalue()), SAMPLE_RATE))


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
def test_formats_soundfile_cannot_read_go_through_ffmpeg(tmp_path: Path) -> None:
    wav = tmp_path / "song.wav"
    wav.write_bytes(audio.encode(random_audio(44100, 2, 44100 * 4) * 0.5, 44100, "wav"))
    m4a = tmp_path / "song.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(wav), "-c:a", "aac", str(m4a)], check=True)
    decoded = tmp_path / "decoded.wav"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(m4a), "-c:a", "pcm_f32le", str(decoded)], check=True
    )
    data = m4a.read_bytes()
    blocks = np.concatenate(list(audio.mono_blocks(io.BytesIO(data), SAMPLE_RATE)))
    # ffmpeg's decode in float against the FLAC it writes (16 or 24 bits), resampled the same way.
    np.testing.assert_allclose(blocks, whole_array_input(decoded.read_bytes()), rtol=0, atol=1e-4)
    with pytest.raises(BadInput, match="ROAR_MAX_AUDIO_MINUTES"):
        next(audio.mono_blocks(io.BytesIO(data), SAMPLE_RATE, max_seconds=2))


def test_the_vocals_file_holds_the_levelled_whole_array_input() -> None:
    data = (SONG / "vocals.flac").read_bytes()
    expected = vad.normalize_level(whole_array_input(data))
    with read_vocals(io.BytesIO(data)) as vocals:
        assert len(vocals) == len(expected)
        np.testing.assert_allclose(vocals[:], expected, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(vocals[1000:5000], vocals[:][1000:5000])
        assert len(vocals[len(vocals) - 3 : len(vocals) + 100]) == 3  # slices stop at the end, as arrays'
        assert vad.speech_regions(vocals) == vad.speech_regions(expected)


def test_voice_detection_by_chunks_hears_what_it_hears_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The LSTM's state crosses the chunks: a song heard 7 windows at a time gets the same
    probabilities as heard in one chunk."""
    vocals = vad.normalize_level(whole_array_input((SONG / "vocals.flac").read_bytes()))
    at_once = vad.speech_probabilities(vocals)
    monkeypatch.setattr(vad, "_CHUNK_WINDOWS", 7)
    np.testing.assert_allclose(vad.speech_probabilities(vocals), at_once, rtol=0, atol=1e-5)


def long_vocals(path: Path, minutes: int) -> Path:
    """`minutes` of 44.1 kHz stereo vocals: song_000's 20 s of singing every 2 minutes, silence between."""
    singing, rate = sf.read(str(SONG / "vocals.flac"), dtype="float32", always_2d=True)
    period = np.zeros((120 * rate, 2), np.float32)
    period[: len(singing)] = singing
    with sf.SoundFile(path, "w", rate, 2, "PCM_16", format="FLAC") as out:
        for _ in range(minutes // 2):
            out.write(period)
    return path


# Reads a vocals file as the service does (spooled, voice detection, every window's samples) and
# prints the process's peak RSS (VmHWM, kB) and the number of regions.
_PEAK_SCRIPT = """
import sys
from services.transcription import vad
from services.transcription.vocals import read_vocals
from services.transcription.windows import windows
with read_vocals(sys.argv[1]) as vocals:
    regions = vad.speech_regions(vocals)
    for window in windows(regions):
        window.samples(vocals)
status = open("/proc/self/status").read().splitlines()
print(next(int(line.split()[1]) for line in status if line.startswith("VmHWM")), len(regions))
"""


def peak_kb_and_regions(path: Path) -> tuple[int, int]:
    env = os.environ | {"ROAR_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, str(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=180,
    )
    peak, regions = done.stdout.split()
    return int(peak), int(regions)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_peak_memory_does_not_grow_with_the_song(tmp_path: Path) -> None:
    """Twenty minutes take no more memory than two (the whole-array path took ~450 MB more: the
    44.1 kHz stereo decode alone is 423 MB)."""
    short_peak, short_regions = peak_kb_and_regions(long_vocals(tmp_path / "short.flac", 2))
    long_peak, long_regions = peak_kb_and_regions(long_vocals(tmp_path / "long.flac", 20))
    assert (short_regions, long_regions) == (3, 30)
    assert long_peak <= PEAK_RATIO * short_peak, (short_peak, long_peak)


async def test_a_cancelled_transcription_stops_while_it_decodes(tmp_path: Path) -> None:
    vocals = long_vocals(tmp_path / "long.flac", 30)
    options = transcription_pb2.TranscriptionOptions(language="en")

    def idle_model(progress: object) -> object:
        return object()  # stopped before any window: never asked to transcribe

    def work(progress: Callable[..., None]) -> object:
        blocks = audio.mono_blocks(vocals, vad.SAMPLE_RATE)
        return transcribe_song(blocks, options, idle_model, progress)  # type: ignore[arg-type]

    assert await stop_at_first_update(work) < STOP_SECONDS


def test_windows_read_from_the_file_hear_the_arrays_samples() -> None:
    data = (SONG / "vocals.flac").read_bytes()
    with read_vocals(io.BytesIO(data)) as vocals:
        whole = vocals[:]
        for window in windows(vad.speech_regions(vocals)):
            np.testing.assert_array_equal(window.samples(vocals), window.samples(whole))


def test_with_lyrics_a_model_that_fails_is_asked_once_and_the_lyrics_are_still_timed() -> None:
    """The aligner needs no transcript: a model that breaks on the first window is logged, not
    asked again for the windows after it, and the lyrics are timed by forced alignment alone."""
    asked = 0

    class BrokenModel:
        name = "broken"

        def language_for(self, language: str) -> str:
            return "en"

        def window_words(self, *args: object, **kwargs: object) -> object:
            nonlocal asked
            asked += 1
            raise RuntimeError("the model broke")

    songs = [ROOT / "tests" / "data" / "songs" / name for name in ("song_000", "song_001", "song_000")]
    parts, truth = [], []
    for song in songs:  # too long together for one window (30 s of singing), 10 s apart
        offset = sum(len(part) for part in parts) / vad.SAMPLE_RATE
        parts += [np.concatenate(list(audio.mono_blocks(song / "vocals.flac", vad.SAMPLE_RATE)))]
        parts += [np.zeros(10 * vad.SAMPLE_RATE, np.float32)]
        truth += [
            (w["word"], w["start"] + offset) for w in json.loads((song / "truth.json").read_text())["words"]
        ]
    vocals = np.concatenate(parts)
    assert len(windows(vad.speech_regions(vocals))) == 2
    lyrics = "\n".join((song / "lyrics.txt").read_text() for song in songs)
    options = transcription_pb2.TranscriptionOptions(language="en", lyrics=lyrics)
    transcript = transcribe_song((part for part in [vocals]), options, lambda _: BrokenModel(), no_progress)  # type: ignore[arg-type,return-value]
    assert asked == 1
    assert transcript.from_user_lyrics
    words = [w for segment in transcript.segments for w in segment.words]
    assert [w.text for w in words] == [text for text, _ in truth]
    assert all(abs(w.start - start) < 0.3 for w, (_, start) in zip(words, truth, strict=True))
