"""Word starts moved onto the onsets of the notes they begin.

The forced aligner's acoustic model was trained on speech: in singing it often lets a short word
("in", "the") start while the word before is still held, or starts a word a few frames after its
note. A sung word begins with a note, and a note begins with a jump in the voice's spectrum (a new
pitch, a consonant after a held vowel, singing after a rest). So each start is moved to the
strongest such jump near it (spectral flux on log band energies, weighted by its distance from the
aligner's start), when that jump is clearly stronger than the one at the aligner's start.
"""

from __future__ import annotations

import itertools
import re

import numpy as np

from roar.progress import check_cancelled
from services.transcription.vad import SAMPLE_RATE, Samples, Span

# How far from the aligner's start a word's onset is looked for (later, for a word of one
# syllable: up to the next word's start when that is farther, but not past MAX_REACH_SECONDS, where
# an instrumental break may lie), and how fast an onset's weight falls with its distance from it (a
# Gaussian's standard deviation; later: half the reach when that is more), in seconds.
SEARCH_SECONDS = 0.5
MAX_REACH_SECONDS = 1.0
SPREAD_SECONDS = 0.25
# An onset moves a start only when its flux is at least this many times the flux at the start.
MIN_FLUX_RATIO = 2.0
# The least time between two words' starts, as moved.
MIN_WORD_SECONDS = 0.1
FRAME_RATE = 100  # flux frames per second
_HOP = SAMPLE_RATE // FRAME_RATE
_N_FFT = 512
# Log-spaced bands from about 125 Hz to 8 kHz: a change of pitch moves energy between bands.
_BAND_EDGES = np.geomspace(4, _N_FFT // 2, 41).astype(int)
# Added to every band's energy, as a share of the loudest bin near the word: near-silence makes no flux.
_FLOOR = 1e-4
_SMOOTHING_FRAMES = 3
_WINDOW = np.hanning(_N_FFT).astype(np.float32)
_VOWEL_GROUP = re.compile(r"[aeiouy]+")


def spectral_flux(audio: Samples, start: float, end: float) -> tuple[float, np.ndarray]:
    """(time of the first frame, flux per frame) of `audio` from `start` to `end` seconds: the
    summed rises of its log band energies from one frame to the next, smoothed over 3 frames."""
    first = max(0, int(start * FRAME_RATE) - 1)
    last = min(len(audio) // _HOP, int(np.ceil(end * FRAME_RATE)) + 1)
    if last - first < 2:
        return first / FRAME_RATE, np.zeros(max(0, last - first), dtype=np.float32)
    # Frames centred on their times, as the aligner's are.
    begin = first * _HOP - _N_FFT // 2
    samples = np.asarray(audio[max(0, begin) : min(len(audio), last * _HOP + _N_FFT // 2)], dtype=np.float32)
    samples = np.pad(samples, (max(0, -begin), 0))
    samples = np.pad(samples, (0, max(0, (last - first - 1) * _HOP + _N_FFT - len(samples))))
    frames = np.lib.stride_tricks.sliding_window_view(samples, _N_FFT)[::_HOP][: last - first]
    spectrum = np.abs(np.fft.rfft(frames * _WINDOW, axis=1))
    bands = np.stack([spectrum[:, a : b + 1].mean(axis=1) for a, b in itertools.pairwise(_BAND_EDGES)], 1)
    levels = np.log(bands + _FLOOR * max(float(spectrum.max()), 1e-9))
    flux = np.maximum(0.0, np.diff(levels, axis=0, prepend=levels[:1])).sum(axis=1)
    smoothed = np.convolve(flux, np.ones(_SMOOTHING_FRAMES) / _SMOOTHING_FRAMES, mode="same")
    return first / FRAME_RATE, smoothed


def onset_starts(audio: Samples, spans: list[Span], words: list[str | None]) -> list[Span]:
    """`spans` (the sung words' (start, end), in order, not overlapping) with each start moved onto
    its note's onset where one stands out near it; the word before ends there at the latest. The
    words stay in order, each at least MIN_WORD_SECONDS after the one before. `words` are their
    texts; None for one that stays where it is."""
    moved = list(spans)
    for k, (start, end) in enumerate(spans):
        text = words[k]
        if text is None:
            continue
        check_cancelled()
        # A word of one syllable (one note: no onset inside it) that the aligner started on the
        # note before, the rest of that note taken as the word or as a silence after it, may begin
        # anywhere up to the next word.
        next_start = spans[k + 1][0] if k + 1 < len(spans) else None
        slot = (next_start if next_start is not None else end) - start
        reach = max(SEARCH_SECONDS, min(slot, MAX_REACH_SECONDS)) if _one_syllable(text) else SEARCH_SECONDS
        earliest = moved[k - 1][0] + MIN_WORD_SECONDS if k else 0.0
        latest = next_start - MIN_WORD_SECONDS if next_start is not None else start + reach
        low, high = max(start - SEARCH_SECONDS, earliest), min(start + reach, latest)
        if high <= low:
            continue
        margin = 2 * _SMOOTHING_FRAMES / FRAME_RATE  # clear of the flux's edges
        origin, flux = spectral_flux(audio, start - SEARCH_SECONDS - margin, start + reach + margin)
        times = origin + np.arange(len(flux)) / FRAME_RATE
        inside = (times >= low) & (times <= high)
        if not inside.any():
            continue
        spread = np.where(times > start, max(SPREAD_SECONDS, reach / 2), SPREAD_SECONDS)
        weighted = np.where(inside, flux * np.exp(-((times - start) ** 2) / (2 * spread**2)), -1.0)
        best = int(np.argmax(weighted))
        at_start = np.abs(times - start) <= 2 / FRAME_RATE
        if not at_start.any() or flux[best] <= MIN_FLUX_RATIO * float(flux[at_start].max()):
            continue
        new_start = float(times[best])
        following = next_start if next_start is not None else new_start + MIN_WORD_SECONDS
        moved[k] = (new_start, max(end, min(new_start + MIN_WORD_SECONDS, following)))
        if k:
            before = moved[k - 1]
            moved[k - 1] = (before[0], min(before[1], new_start))
    return moved


def _one_syllable(text: str) -> bool:
    """Whether a word is spelt with one vowel group ("the", "night", "stay"; a final silent "e"
    aside): sung on one note. Words of other scripts are not taken as such."""
    letters = re.sub(r"[^a-z]", "", text.lower())
    groups = len(_VOWEL_GROUP.findall(letters))
    if groups > 1 and letters.endswith("e") and not letters.endswith(("le", "ee")):
        groups = len(_VOWEL_GROUP.findall(letters[:-1]))
    return groups == 1
