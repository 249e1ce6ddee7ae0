"""Word starts moved onto their notes' onsets (services/transcription/onsets.py), on notes whose
onsets are known: a sung melody of harmonic tones, a rest between some of them."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from services.transcription.onsets import MIN_WORD_SECONDS, SEARCH_SECONDS, _one_syllable, onset_starts
from services.transcription.vad import SAMPLE_RATE

# (onset, end, pitch in Hz) of each note: a held note, legato notes (a new pitch, no rest), a rest.
NOTES = [(0.5, 2.0, 220.0), (2.0, 2.7, 262.0), (2.7, 3.4, 196.0), (4.4, 5.1, 247.0), (5.1, 5.8, 220.0)]


def _melody() -> np.ndarray:
    rng = np.random.default_rng(3)
    audio = 0.003 * rng.standard_normal(int(6.5 * SAMPLE_RATE)).astype(np.float32)
    for onset, end, pitch in NOTES:
        t = np.arange(int((end - onset) * SAMPLE_RATE)) / SAMPLE_RATE
        note = sum(np.sin(2 * np.pi * pitch * h * t) / h for h in range(1, 8))
        envelope = np.minimum(1.0, t / 0.02) * np.minimum(1.0, (end - onset - t) / 0.02)
        start = int(onset * SAMPLE_RATE)
        audio[start : start + len(t)] += (0.1 * envelope * note).astype(np.float32)
    return audio


def test_starts_off_their_notes_move_onto_them() -> None:
    audio = _melody()
    # The aligner's errors: late, early over the held note before, late after a rest, right.
    offsets = [0.15, -0.3, 0.25, 0.2, 0.0]
    spans = [(onset + off, end) for (onset, end, _), off in zip(NOTES, offsets, strict=True)]
    spans = [
        (start, min(end, spans[k + 1][0]) if k + 1 < len(spans) else end)
        for k, (start, end) in enumerate(spans)
    ]
    moved = onset_starts(audio, spans, ["la"] * len(spans))
    for (onset, _, _), (start, _) in zip(NOTES, moved, strict=True):
        assert abs(start - onset) <= 0.03
    assert all(a[1] <= b[0] and a[0] <= a[1] for a, b in itertools.pairwise(moved))


@pytest.mark.parametrize("end", [2.65, 1.5], ids=["stretched over it", "then a silence"])
def test_a_word_of_one_note_started_on_the_note_before_starts_at_its_own(end: float) -> None:
    audio = _melody()
    # The second word starts 0.6 s before its note (2.0 s), on the held note before it: the
    # aligner took the rest of that note as the word, or as a silence after it.
    spans = [(0.5, 1.4), (1.4, end), (2.7, 3.4)]
    moved = onset_starts(audio, spans, ["I", "the", "way"])
    assert abs(moved[1][0] - 2.0) <= 0.03
    assert moved[0] == (0.5, 1.4) and abs(moved[2][0] - 2.7) <= 0.03
    # A word of two syllables may have a note's onset inside it: it is looked for near its start.
    assert onset_starts(audio, spans, ["I", "lanterns", "way"])[1][0] < 1.95


@pytest.mark.parametrize(
    ("word", "one"),
    [
        ("the", True),
        ("night", True),
        ("stay", True),
        ("fire", True),
        ("lanterns", False),
        ("into", False),
        ("little", False),
        ("évé", False),
        ("夜", False),
    ],
)
def test_words_of_one_syllable(word: str, one: bool) -> None:
    assert _one_syllable(word) == one


def test_a_start_with_no_onset_within_reach_stays() -> None:
    audio = _melody()
    # Inside the held note, farther than the search from its onset, the next word close by.
    held = [(0.5 + SEARCH_SECONDS + 0.05, 1.25), (1.35, 1.5)]
    assert onset_starts(audio, held, ["la", "la"]) == held
    # In the rest, farther than the search from the next onset.
    rest = [(4.4 - SEARCH_SECONDS - 0.05, 3.95)]
    assert onset_starts(audio, rest, ["la"]) == rest


def test_a_word_that_may_not_move_stays_and_bounds_its_neighbours() -> None:
    audio = _melody()
    spans = [(1.8, 2.1), (2.15, 2.6)]  # the first may not move; the second's onset (2.0) is before it ends
    moved = onset_starts(audio, spans, [None, "la"])
    assert moved[0][0] == 1.8
    assert moved[1][0] >= 1.8 + MIN_WORD_SECONDS
    assert moved[0][1] <= moved[1][0]


@pytest.mark.parametrize("length", [0, 100, SAMPLE_RATE // 2])
def test_words_at_the_audios_edges(length: int) -> None:
    audio = np.zeros(length, dtype=np.float32)
    spans = [(0.0, 0.2), (0.3, 0.6)]
    assert onset_starts(audio, spans, ["la", "la"]) == spans
