"""The Spleeter 2-stem backend: real weights against the reference SDR and the old whole-song path
(../shared), and its windows, progress, cancelling, resuming and loading with random weights of
the same architecture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import save_file

from roar.errors import Cancelled, ModelUnavailable
from services.separation import separate
from services.separation.separate import OVERLAP, SongPlan, SongWindow, separate_audio, separate_song
from services.separation.separator import MixLevel
from services.separation.spleeter import SOURCES, WINDOW_FRAMES, SpleeterSeparator, UNet

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MODEL_DIR = SHARED / "models" / "spleeter-2stems"
MUSDB_PREVIEW = SHARED / "audio" / "musdb-preview"
# From the model's README: plain SDR on the MUSDB preview.
REFERENCE_SDR = {"vocals": 4.74, "accompaniment": 10.90}
SAMPLE_RATE = 44100
WINDOW_STRIDE = int((1 - OVERLAP) * WINDOW_FRAMES)
# Spleeter's ratio masks need no level.
NO_LEVEL = MixLevel(0.0, 1.0)

needs_shared = pytest.mark.skipif(
    not (MODEL_DIR.is_dir() and MUSDB_PREVIEW.is_dir()),
    reason=f"needs the Spleeter weights and MUSDB preview in {SHARED}",
)


def sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    reference = reference.astype(np.float64)
    return float(10 * np.log10(np.sum(reference**2) / np.sum((reference - estimate) ** 2)))


def read(name: str) -> np.ndarray:
    audio, sample_rate = sf.read(MUSDB_PREVIEW / f"{name}.flac", dtype="float32", always_2d=True)
    assert sample_rate == SAMPLE_RATE
    return audio.T


@pytest.fixture(scope="module")
def real_separator() -> SpleeterSeparator:
    return SpleeterSeparator(MODEL_DIR, "cpu")


@pytest.fixture(scope="module")
def musdb() -> dict[str, np.ndarray]:
    return {
        "mixture": read("mixture"),
        "vocals": read("vocals"),
        "accompaniment": read("drums") + read("bass") + read("other"),
    }


def whole_song(separator: SpleeterSeparator, audio: np.ndarray) -> dict[str, np.ndarray]:
    """The old code path: one STFT of the whole song, U-Net segments cut from its first frame."""
    separated = separator.separate_window(torch.from_numpy(audio), 0, audio.shape[1], NO_LEVEL)
    return {source: separated[i].numpy() for i, source in enumerate(SOURCES)}


@pytest.mark.shared
@needs_shared
def test_real_weights_match_reference_sdr(
    real_separator: SpleeterSeparator, musdb: dict[str, np.ndarray]
) -> None:
    separated = separate_audio(real_separator, musdb["mixture"])  # 6 s: one window
    for source, reference in REFERENCE_SDR.items():
        assert sdr(musdb[source], separated[source]) == pytest.approx(reference, abs=0.1), source


@pytest.mark.shared
@needs_shared
def test_windows_separate_as_well_as_the_whole_song_at_once(
    real_separator: SpleeterSeparator, musdb: dict[str, np.ndarray]
) -> None:
    """Five copies of the preview (30 s, four windows): crossfaded windows score at least the
    old whole-song path's SDR less 0.3 dB (measured: 0.2 dB better), and stay close to its output
    (measured 16 dB vocals, 24 dB accompaniment: the old path's segment edges differ)."""
    mixture = np.tile(musdb["mixture"], 5)
    windowed = separate_audio(real_separator, mixture)
    whole = whole_song(real_separator, mixture)
    for source in SOURCES:
        reference = np.tile(musdb[source], 5)
        assert sdr(reference, windowed[source]) > sdr(reference, whole[source]) - 0.3, source
        assert sdr(whole[source], windowed[source]) > 12.0, source


@pytest.fixture(scope="module")
def random_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model_dir = tmp_path_factory.mktemp("spleeter-random")
    torch.manual_seed(0)
    for source in SOURCES:
        save_file(UNet().state_dict(), model_dir / f"{source}.safetensors")
    return model_dir


@pytest.fixture(scope="module")
def random_separator(random_model_dir: Path) -> SpleeterSeparator:
    return SpleeterSeparator(random_model_dir, "cpu")


def noise(frames: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(0).standard_normal((2, frames))).astype(np.float32)


@pytest.fixture
def no_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the reports at the end of each window (on a busy machine a window takes seconds)."""
    monkeypatch.setattr(separate, "HEARTBEAT_SECONDS", float("inf"))


@pytest.mark.usefixtures("no_heartbeat")
def test_progress_rises_window_by_window(random_separator: SpleeterSeparator) -> None:
    reports: list[tuple[float, str]] = []
    frames = 3 * WINDOW_STRIDE + 5  # four windows, the last of five frames
    separate_audio(
        random_separator, noise(frames), lambda percent, message="": reports.append((percent, message))
    )
    assert [message for _, message in reports] == [f"separating: window {i}/4" for i in (1, 2, 3, 4)]
    percents = [percent for percent, _ in reports]
    assert percents == sorted(percents) and percents[-1] == 100.0


@pytest.mark.usefixtures("no_heartbeat")
def test_raising_progress_stops_the_remaining_windows(random_separator: SpleeterSeparator) -> None:
    forward_calls: list[str] = []
    hooks = [
        net.register_forward_hook(lambda *_, source=source: forward_calls.append(source))
        for source, net in random_separator.nets.items()
    ]
    reports: list[float] = []

    def cancel_on_second_report(percent: float, message: str = "") -> None:
        reports.append(percent)
        if len(reports) == 2:
            raise Cancelled()

    try:
        with pytest.raises(Cancelled):
            separate_audio(random_separator, noise(3 * WINDOW_STRIDE), cancel_on_second_report)
    finally:
        for hook in hooks:
            hook.remove()
    assert len(reports) == 2
    assert forward_calls == SOURCES * 2  # both nets on two windows, none on the third


def test_a_resumed_call_yields_the_same_windows_bit_for_bit(
    random_separator: SpleeterSeparator, tmp_path: Path
) -> None:
    path = tmp_path / "noise.flac"
    sf.write(path, noise(4 * WINDOW_STRIDE + 99).T, SAMPLE_RATE, subtype="PCM_16")
    plan, *whole = separate_song(random_separator, path, all_stems=True)
    resumed_plan, *resumed = separate_song(random_separator, path, all_stems=True, first_window=3)

    assert resumed_plan == plan
    assert isinstance(plan, SongPlan) and plan.window_count == 5
    assert plan.stems == ["vocals", "instrumental", "accompaniment"]
    assert len(resumed) == 2
    for expected, got in zip(whole[3:], resumed, strict=True):
        assert isinstance(expected, SongWindow) and isinstance(got, SongWindow)
        assert (got.index, got.start_frame) == (expected.index, expected.start_frame)
        for stem, audio in expected.stems.items():
            assert audio.tobytes() == got.stems[stem].tobytes()


@pytest.fixture(scope="module")
def odd_length_audio() -> np.ndarray:
    return noise(SAMPLE_RATE * 3 + 7)


@pytest.fixture(scope="module")
def odd_length_separated(
    random_separator: SpleeterSeparator, odd_length_audio: np.ndarray
) -> dict[str, np.ndarray]:
    return separate_audio(random_separator, odd_length_audio)


def test_sources_have_the_input_shape(
    odd_length_audio: np.ndarray, odd_length_separated: dict[str, np.ndarray]
) -> None:
    assert list(odd_length_separated) == SOURCES
    for source in odd_length_separated.values():
        assert source.shape == odd_length_audio.shape
        assert source.dtype == np.float32


def test_sources_sum_to_the_mixture_below_the_model_band(
    odd_length_audio: np.ndarray, odd_length_separated: dict[str, np.ndarray]
) -> None:
    # The ratio masks sum to one on the first 1024 bins, and the bins above are dropped.
    window = torch.hann_window(4096)
    audio = torch.from_numpy(odd_length_audio)
    stft = torch.stft(audio, 4096, 1024, window=window, pad_mode="constant", return_complex=True)
    stft[:, 1024:] = 0
    low_passed = torch.istft(stft, 4096, 1024, window=window, length=odd_length_audio.shape[1]).numpy()
    total = sum(odd_length_separated.values())
    assert np.abs(total - low_passed).max() < 1e-4
    # Each source alone is not the whole band: the masks do split it.
    assert all(np.abs(source - low_passed).max() > 1e-2 for source in odd_length_separated.values())


def test_rejects_audio_that_is_not_stereo(random_separator: SpleeterSeparator) -> None:
    with pytest.raises(ValueError, match="stereo"):
        random_separator.separate_window(torch.from_numpy(noise(1000)[:1]), 0, 1000, NO_LEVEL)


def test_missing_model_dir_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match=r"lacks vocals\.safetensors") as raised:
        SpleeterSeparator(tmp_path / "absent", "cpu")
    assert str(tmp_path) not in raised.value.message


def test_corrupt_weights_are_unavailable(tmp_path: Path, random_model_dir: Path) -> None:
    (tmp_path / "vocals.safetensors").write_bytes((random_model_dir / "vocals.safetensors").read_bytes())
    (tmp_path / "accompaniment.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelUnavailable, match=r"accompaniment\.safetensors do not load") as raised:
        SpleeterSeparator(tmp_path, "cpu")
    assert str(tmp_path) not in raised.value.message


def test_weights_of_another_architecture_are_unavailable(tmp_path: Path) -> None:
    for source in SOURCES:
        save_file({"up7.0.weight": torch.zeros(2, 1, 4, 4)}, tmp_path / f"{source}.safetensors")
    with pytest.raises(ModelUnavailable, match="do not load"):
        SpleeterSeparator(tmp_path, "cpu")
