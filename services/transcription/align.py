"""Karaoke timing from the user's own lyrics: forced alignment of their words to the vocals stem with
pocketsphinx (its en-us acoustic model and CMUdict), window by window.

A window is up to WINDOW_SECONDS of audio from where the last window's kept words end, skipping
silence to the next sung region. Its grammar is the next words of the lyrics in order, of which any
first few may be sung in it; the words the aligner puts in the first COMMIT_SECONDS of the window
are kept, and the rest are aligned again by the next window, which hears them whole. The last
window's grammar needs all the words left. So the work grows linearly with the song's length
(aligning a whole song at once grows faster: 2.4 s for 3 minutes, 9 s for 6), memory stays small,
and progress and cancellation happen per window.

Words with no pronunciation, and the words of a window whose alignment failed, are spread over the
sung regions between their aligned neighbours in proportion to their length.

The lyrics must be what is sung: an unsung extra line (a title, a chorus sung once but written
twice) pulls the words after it off, as forced alignment has no way to leave words out.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from itertools import accumulate

import numpy as np
from pocketsphinx import Decoder

from roar.progress import ProgressCallback, no_progress
from roar.text import lyric_lines, normalize_word, normalized_words
from roar.v1 import common_pb2
from services.transcription.vad import SAMPLE_RATE, speech_regions

WINDOW_SECONDS = 60.0
COMMIT_SECONDS = 45.0
# A window starts this long before the sung region it skips to: the region's onset is padded,
# and the aligner needs some silence before the first word.
LEAD_IN_SECONDS = 0.5
# More words than anyone sings in a window: the cap keeps the grammar small for long lyrics.
MAX_WORDS_PER_SECOND = 6.0
# Confidence of a word the aligner placed, and of one spread between its neighbours without being
# heard (pocketsphinx's word posteriors in alignment are ~1 whatever was sung, so they say nothing).
ALIGNED_CONFIDENCE = 1.0
PLACED_CONFIDENCE = 0.0

# Lines such as "[Chorus]" or "[Verse 2]" name a section of the song; nobody sings them.
_FRAMES_PER_SECOND = 100  # pocketsphinx's default frame rate
_NON_WORDS = ("<s>", "</s>", "<sil>", "(NULL)")  # "(NULL)": a null transition of the grammar
_ALTERNATIVE = re.compile(r"\(\d+\)$")  # "the(2)": CMUdict's second pronunciation of "the"


@dataclass
class _Word:
    text: str  # as the user wrote it
    key: str | None  # its entry in the decoder's dictionary; None when it has no pronunciation
    start: float | None = None
    end: float | None = None
    confidence: float = PLACED_CONFIDENCE


def align_lyrics(
    audio: np.ndarray, lyrics: str, progress: ProgressCallback = no_progress
) -> list[common_pb2.Segment]:
    """One Segment per sung line of `lyrics`, each Word the user's text timed against `audio` (the
    vocals stem, mono float32 at 16 kHz). Words are ordered and do not overlap; a word the aligner
    could not place has confidence 0. Raises Cancelled when `progress` does."""
    lines = lyric_lines(lyrics)
    if not lines:
        return []
    # One decoder per call (0.1 s to load) keeps calls independent. Its Viterbi path is the alignment:
    # the lattice's best path (bestpath) may end short of the grammar's end and drop the last words.
    decoder = Decoder(lm=None, bestpath=False, loglevel="FATAL")
    words = [_Word(text, _dictionary_key(decoder, text)) for line in lines for text in line]
    duration = len(audio) / SAMPLE_RATE
    regions = speech_regions(audio)
    if regions:
        pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
        _align_windows(decoder, pcm, [w for w in words if w.key], regions, progress)
        _start_in_regions(words, regions)
    _spread_unaligned(words, regions or [(0.0, duration)], duration)
    progress(100.0, "lyrics aligned")
    segments = []
    first = 0
    for line in lines:
        timed = words[first : first + len(line)]
        first += len(line)
        segments.append(
            common_pb2.Segment(
                text=" ".join(line),
                start=timed[0].start,
                end=timed[-1].end,
                words=[
                    common_pb2.Word(text=w.text, start=w.start, end=w.end, confidence=w.confidence)
                    for w in timed
                ],
            )
        )
    return segments


def _align_windows(
    decoder: Decoder,
    pcm: np.ndarray,
    words: list[_Word],
    regions: list[tuple[float, float]],
    progress: ProgressCallback,
) -> None:
    """Times `words` (all with dictionary keys) window by window; words left untimed are those of
    failed windows and any the aligner did not fit before the audio ended."""
    duration = len(pcm) / SAMPLE_RATE
    position = 0.0  # everything before has been aligned
    next_word = 0
    while next_word < len(words):
        upcoming = [start for start, end in regions if end > position]
        if not upcoming:
            return
        start = max(position, upcoming[0] - LEAD_IN_SECONDS)
        end = min(start + WINDOW_SECONDS, duration)
        progress(100.0 * start / duration, f"aligning lyrics: {start:.0f} s of {duration:.0f} s")
        batch = words[next_word : next_word + int(MAX_WORDS_PER_SECOND * WINDOW_SECONDS)]
        keys = [w.key for w in batch if w.key]  # all of them: `words` holds words with keys
        last = end >= duration
        timed = None
        if last and len(batch) == len(words) - next_word:
            # The rest of the song: all the words left are sung in it. A grammar that may end early
            # drops a last word whose match is weak (a held note fading out).
            timed = _align_window(decoder, pcm, start, end, keys, complete=True)
        if timed is None:
            timed = _align_window(decoder, pcm, start, end, keys, complete=False)
        keep_before = end if last else start + COMMIT_SECONDS
        if timed is None:
            # Leave the words the window's share of the singing would hold to be spread over it.
            speech_left = _speech_seconds(regions, start, duration)
            share = _speech_seconds(regions, start, keep_before) / speech_left if speech_left else 1.0
            next_word += max(1, round(share * (len(words) - next_word)))
            position = keep_before
            continue
        kept = [t for t in timed if t[0] < keep_before]
        for word, (word_start, word_end) in zip(batch, kept, strict=False):
            word.start, word.end, word.confidence = word_start, word_end, ALIGNED_CONFIDENCE
        next_word += len(kept)
        if last:
            return
        position = kept[-1][1] if kept else keep_before


def _align_window(
    decoder: Decoder, pcm: np.ndarray, start: float, end: float, keys: list[str], complete: bool
) -> list[tuple[float, float]] | None:
    """(start, end) seconds of the words of `keys` sung in [start, end) of the audio, in order: all
    of them when `complete`, else the first few the aligner hears; None when pocketsphinx fails."""
    count = len(keys)
    # States 0..count: word i leads from state i to i + 1; unless complete, any state may end it.
    transitions = [(i, i + 1, 1.0, key) for i, key in enumerate(keys)]
    if not complete:
        transitions += [(i, count, 1.0) for i in range(count)]
    try:
        decoder.add_fsg("lyrics", decoder.create_fsg("lyrics", 0, count, transitions))
        decoder.activate_search("lyrics")
        decoder.start_utt()
        decoder.process_raw(
            pcm[round(start * SAMPLE_RATE) : round(end * SAMPLE_RATE)].tobytes(), full_utt=True
        )
        decoder.end_utt()
        segments = list(decoder.seg()) if decoder.hyp() is not None else []
    except (RuntimeError, ValueError):
        return None
    timed = []
    for segment in segments:
        if segment.word in _NON_WORDS or segment.word.startswith(("[", "+")):  # silence, fillers
            continue
        name = _ALTERNATIVE.sub("", segment.word)
        if len(timed) >= count or name != keys[len(timed)]:
            return None
        timed.append(
            (
                start + segment.start_frame / _FRAMES_PER_SECOND,
                start + (segment.end_frame + 1) / _FRAMES_PER_SECOND,
            )
        )
    if complete and len(timed) < count:
        return None  # pocketsphinx's best partial path: the grammar's end was never reached
    return timed


def _start_in_regions(words: list[_Word], regions: list[tuple[float, float]]) -> None:
    """Moves the start of an aligned word that begins in a gap between sung regions to where the
    next region begins, when that is before the word's end: the aligner lets a line's first word
    take in the band's bleed before it, while the voice activity model hears no singing there."""
    starts = [start for start, _ in regions]
    for word in words:
        if word.start is None or word.end is None:
            continue
        following = bisect.bisect_right(starts, word.start)
        in_region = following > 0 and word.start < regions[following - 1][1]
        if not in_region and following < len(regions) and starts[following] < word.end:
            word.start = starts[following]


def _spread_unaligned(words: list[_Word], regions: list[tuple[float, float]], duration: float) -> None:
    """Gives each run of untimed words the sung time between its timed neighbours (or the audio's
    ends), shared in proportion to the words' length; evenly over the gap when nothing is sung there."""
    index = 0
    while index < len(words):
        if words[index].start is not None:
            index += 1
            continue
        stop = index
        while stop < len(words) and words[stop].start is None:
            stop += 1
        low = words[index - 1].end if index > 0 else 0.0
        high = max(words[stop].start if stop < len(words) else duration, low)
        spans = [(max(a, low), min(b, high)) for a, b in regions if b > low and a < high] or [(low, high)]
        weights = [len(normalize_word(w.text)) + 1 for w in words[index:stop]]
        bounds = [total / sum(weights) for total in accumulate(weights, initial=0)]
        for word, a, b in zip(words[index:stop], bounds, bounds[1:], strict=False):
            word.start, word.end = _speech_time(spans, a), _speech_time(spans, b)
        index = stop


def _speech_time(spans: list[tuple[float, float]], fraction: float) -> float:
    """The time at `fraction` of the way through the total length of `spans`."""
    lengths = list(accumulate(b - a for a, b in spans))
    target = fraction * lengths[-1]
    span = min(bisect.bisect_left(lengths, target), len(spans) - 1)
    before = lengths[span - 1] if span else 0.0
    return spans[span][0] + (target - before)


def _speech_seconds(regions: list[tuple[float, float]], start: float, end: float) -> float:
    return sum(max(0.0, min(b, end) - max(a, start)) for a, b in regions)


# --- pronunciations ---


def _dictionary_key(decoder: Decoder, text: str) -> str | None:
    """The dictionary word for a word of the lyrics, added to the decoder's dictionary when CMUdict
    lacks it ("don't" -> "don't", "rock-n-roll" -> "rock_n_roll", "1999" -> "1999"); None when
    no pronunciation can be made."""
    parts = normalized_words(text)
    if len(parts) == 1 and decoder.lookup_word(parts[0]):
        return parts[0]  # keeps CMUdict's alternative pronunciations
    pronunciations = [_pronunciation(decoder, part) for part in parts]
    if not parts or None in pronunciations:
        return None
    key = "_".join(parts)
    if decoder.lookup_word(key) is None:
        decoder.add_word(key, " ".join(pronunciations))
    return key


def _pronunciation(decoder: Decoder, word: str) -> str | None:
    if phones := decoder.lookup_word(word):
        return phones
    if word.isdigit():
        spoken = [decoder.lookup_word(w) for w in number_words(int(word))]
        return " ".join(spoken) if all(spoken) else None  # type: ignore[arg-type]
    if word.endswith("in") and (phones := decoder.lookup_word(word + "g")):
        return phones  # "singin'" sung as "singing"
    return letters_to_phones(word)


_ONES = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
)  # fmt: skip
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def number_words(number: int) -> list[str]:
    """How a number is sung: 42 -> forty two, 300 -> three hundred, 1999 -> nineteen ninety nine,
    1905 -> nineteen oh five, 2012 -> twenty twelve, 2005 -> two thousand five."""
    if number < 20:
        return [_ONES[number]]
    if number < 100:
        return [_TENS[number // 10]] + ([_ONES[number % 10]] if number % 10 else [])
    if number < 1000:
        rest = number % 100
        return [_ONES[number // 100], "hundred"] + (number_words(rest) if rest else [])
    if 1100 <= number < 2000 or 2010 <= number < 2100:  # read as a year
        high, low = divmod(number, 100)
        tail = (["oh"] if low < 10 else []) + number_words(low) if low else ["hundred"]
        return number_words(high) + tail
    if number < 1_000_000:
        rest = number % 1000
        return number_words(number // 1000) + ["thousand"] + (number_words(rest) if rest else [])
    return [digit for character in str(number) for digit in number_words(int(character))]


# Letters to CMUdict phones for words CMUdict lacks (names, made-up words): a rough reading, longest
# spelling first, which is enough for the aligner to find the word between its neighbours.
_SPELLINGS = {
    "tch": "CH", "sch": "S K", "igh": "AY", "ough": "AO", "augh": "AO", "eau": "OW",
    "ch": "CH", "sh": "SH", "th": "TH", "ph": "F", "wh": "W", "ck": "K", "ng": "NG", "qu": "K W",
    "gh": "G", "ee": "IY", "ea": "IY", "oo": "UW", "ou": "AW", "ow": "OW", "ai": "EY", "ay": "EY",
    "oi": "OY", "oy": "OY", "au": "AO", "aw": "AO", "ei": "EY", "ey": "EY", "ie": "IY", "ue": "UW",
    "ew": "UW", "ar": "AA R", "er": "ER", "ir": "ER", "ur": "ER", "or": "AO R",
    "a": "AE", "b": "B", "c": "K", "d": "D", "e": "EH", "f": "F", "g": "G", "h": "HH", "i": "IH",
    "j": "JH", "k": "K", "l": "L", "m": "M", "n": "N", "o": "AA", "p": "P", "q": "K", "r": "R",
    "s": "S", "t": "T", "u": "AH", "v": "V", "w": "W", "x": "K S", "y": "IY", "z": "Z", "'": "",
}  # fmt: skip
_LONGEST_SPELLING = max(map(len, _SPELLINGS))


def letters_to_phones(word: str) -> str | None:
    """A rough pronunciation of a lower-case word from its letters: "zorblax" -> Z AO R B L AE K S;
    None when it has other characters."""
    if len(word) > 3 and word.endswith("e") and word[-2] not in "aeiouy":
        word = word[:-1]  # a silent final e: "stone"
    phones: list[str] = []
    position = 0
    while position < len(word):
        for length in range(min(_LONGEST_SPELLING, len(word) - position), 0, -1):
            spelling = word[position : position + length]
            if spelling in _SPELLINGS:
                break
        else:
            return None
        sounds = ["Y"] if spelling == "y" and position == 0 else _SPELLINGS[spelling].split()
        if phones and sounds and phones[-1] == sounds[0]:
            sounds = sounds[1:]  # doubled letters sound once: "ll", "xs"
        phones.extend(sounds)
        position += len(spelling)
    return " ".join(phones) or None
