"""Karaoke timing from the user's own lyrics, where no line can move the rest.

1. The lyrics are parsed (lyrics.parse_lyrics: markup out, repeats written out).
2. The model transcribes the vocals (the `transcribe` callback) and the lyric words are matched to
   the heard words by a global alignment over words (word_alignment.align_words). Matches in a run
   of at least two, or of a long word the model was sure of, are anchors: they say roughly when
   their line is sung. A run of heard words that no lyric word covers is a sung passage the lyrics
   lack: it keeps its transcribed words.
3. Each line with anchors is force-aligned on its own with pocketsphinx (its en-us acoustic model
   and CMUdict) in a short window around its anchors, between the line before and the next one's
   anchors, so an error stays in its line.
4. The lines without anchors between two timed neighbours are force-aligned together in the gap
   between them (trimmed to its singing). A line whose words land where the voice activity model
   hears no singing, or one in a gap with no singing at all, is NOT SUNG: no times; the others are
   aligned again without it. When no path of the aligner runs through all of them, the line whose
   leaving out fits best is not sung (a line pasted in place of the one sung there).
5. Words no alignment placed (no pronunciation, a failed window) are spread between their timed
   neighbours, in proportion to their length, and marked as not heard.
6. A line placed without anchors over words the model heard clearly is NOT SUNG when the model
   finds those words far likelier there than the line (the `judge` callback): it was put over a
   line the lyrics lack. Then every run of heard words that no sung line covers (such a line, or
   one sung where a line left out in step 4 was put) is kept as a passage the lyrics lack.
7. Each sung word's start is moved onto its note's onset where one stands out within half a second
   (onsets.onset_starts): the acoustic model, trained on speech, often starts a short word while
   the word before is still held.

A high voice is aligned again, steps 2-5, with pocketsphinx's features warped for a shorter vocal
tract, when its lines fit the audio better so (see HIGH_VOICE_WARP). Steps 6 and 7 come last, once.

With no anchor at all (nothing heard, or no transcription), the whole song is one gap (aligned
window by window, every line taken as sung, when it is longer than MAX_GAP_SECONDS). When the voice
activity model hears no singing anywhere, every line is taken as sung and spread over the audio:
the files stay usable, just not synced.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate

import numpy as np
from pocketsphinx import Decoder

from roar.errors import Cancelled
from roar.progress import ProgressCallback, check_cancelled, no_progress, scaled
from roar.text import normalize_word, normalized_words
from roar.v1 import common_pb2
from services.transcription.lyrics import LyricLine, parse_lyrics
from services.transcription.onsets import onset_starts
from services.transcription.vad import SAMPLE_RATE, Samples, Span, speech_regions
from services.transcription.word_alignment import align_words

log = logging.getLogger("roar.transcription")

# The name a transcript timed from the user's lyrics carries as its model.
ALIGNER_NAME = "lyrics aligned with pocketsphinx, anchored by the transcription"
# The share of the work that transcribing takes (the rest is aligning).
TRANSCRIBE_SHARE = 70.0

# The shares of the alignment's progress that its first pass and the check of the voice take (a high
# voice is aligned again in the rest).
FIRST_PASS_SHARE = 45.0
VOICE_CHECK_SHARE = 5.0
# The share of the alignment's progress that the lines with anchors take (the gaps the rest).
ANCHORED_SHARE = 60.0

# --- anchors ---
# A match of a single word (no matching neighbour) anchors its line only when the word is this long
# and the model heard it with this confidence: "the" or "I" match anywhere.
LONE_ANCHOR_LETTERS = 4
LONE_ANCHOR_CONFIDENCE = 0.5
# A run of at least this many heard words that no lyric word covers is a passage missing from the
# lyrics (fewer are mishearings or fillers).
MIN_MISSING_WORDS = 3

# --- windows ---
# A line's window reaches this far per word before its first anchor and after its last (slow
# singing: held notes), plus a margin for the transcription's timing error.
WORD_SECONDS = 0.7
WINDOW_MARGIN_SECONDS = 0.6
# ...and ends this much per word before the next line's first anchor, for that line's words before
# it (sung fast: a line anchored only by its third word left the line before room to take its
# first two).
FAST_WORD_SECONDS = 0.25
# Gaps longer than this are aligned window by window (a long stretch with no anchor).
WINDOW_SECONDS = 60.0
# A gap between anchored lines up to this long is aligned at once.
MAX_GAP_SECONDS = 120
COMMIT_SECONDS = 45.0
# A window starts this long before the sung region it skips to: the aligner needs some silence
# before the first word.
LEAD_IN_SECONDS = 0.5
# More words than anyone sings in a window: the cap keeps the grammar small for long lyrics.
MAX_WORDS_PER_SECOND = 6.0

# --- not sung ---
# A gap between timed lines with less singing than this share of what its shortest line takes
# (at the song's pace) holds no line.
MIN_GAP_VOICE_SHARE = 0.5
# Seconds a sung word takes, with the gap after it, when no line was timed to measure it.
DEFAULT_WORD_SECONDS = 0.5
# A line placed without anchors is sung only when at least this share of its span is singing.
MIN_LINE_VOICE_SHARE = 0.35
# A block of lines with no path through them all is aligned again with each line left out in turn
# (to find the one not sung) when it has at most this many lines: each try aligns the whole gap.
MAX_LINES_LEFT_OUT_IN_TURN = 8

# A line placed without anchors over at least MIN_MISSING_WORDS heard words is not sung when the model
# finds its text this much less likely there than the words it heard (mean log-probability per token,
# whisper-tiny.en): another line is sung there. On the dev set's lines without anchors, the two unsung
# lines that were put over a line the lyrics lack fell 4.1 and 3.1 under what was heard there, sung
# lines at most 1.3; on the val and female sets, sung lines at most 1.7 (none over this).
MIN_HEARD_ADVANTAGE = 2.5
# The heard words over a line: those whose middle is in its span or this close to it...
HEARD_MARGIN_SECONDS = 0.1
# ...judged in its span and this much audio around it.
JUDGED_MARGIN_SECONDS = 0.3

# --- confidence ---
# pocketsphinx's word posteriors in alignment are ~1 whatever was sung, so a word it placed
# without an anchor gets this; an anchored word the model's own confidence (at least this).
ALIGNED_CONFIDENCE = 0.5
INTERPOLATED_CONFIDENCE = 0.0

# pocketsphinx's pruning beams (see _new_decoder).
BEAM = 1e-80
WORD_BEAM = 1e-60
# The probability of a silence between two words. pocketsphinx's default (0.005) is for speech,
# where words run on; sung words are often apart (a rest, a breath), and with the default the
# aligner stretched a word over the rest after it and put the next one late.
SILENCE_PROBABILITY = 1.0
# A high voice (a shorter vocal tract: most women's and children's) fits pocketsphinx's acoustic
# model, trained on speech, better with its features warped by this (inverse linear) factor, male
# voices worse. A song is aligned again warped when its lines fit better so by over MIN_WARP_GAIN
# (log acoustic score per frame), each in its span and WARP_MARGIN_SECONDS around. On 22 tuning
# songs the 7 female voices over 1e-4 gained up to 7 points of words within 0.2 s (none lost), the 3
# under it little either way; no male voice passed 0.6e-4.
HIGH_VOICE_WARP = 1.3
MIN_WARP_GAIN = 1e-4
WARP_MARGIN_SECONDS = 0.3
_FRAMES_PER_SECOND = 100  # pocketsphinx's default frame rate
_NON_WORDS = ("<s>", "</s>", "<sil>", "(NULL)")  # "(NULL)": a null transition of the grammar
_ALTERNATIVE = re.compile(r"\(\d+\)$")  # "the(2)": CMUdict's second pronunciation of "the"

# The model's mean log-probability per token of each text as the words sung in some audio (mono
# float32 at 16 kHz, up to 30 s); None when it cannot judge.
Judge = Callable[[Samples, list[str]], list[float] | None]


@dataclass
class _Word:
    text: str  # as the user wrote it
    key: str | None  # its entry in the decoder's dictionary; None when it has no pronunciation
    start: float | None = None
    end: float | None = None
    confidence: float = INTERPOLATED_CONFIDENCE
    heard: bool = False


@dataclass
class _Line:
    text: str
    words: list[_Word]
    anchors: list[tuple[int, common_pb2.Word]] = field(default_factory=list)  # (word index, heard)
    sung: bool = True

    @property
    def timed(self) -> bool:
        return any(w.heard for w in self.words)

    @property
    def start(self) -> float:
        return min(w.start for w in self.words if w.start is not None)

    @property
    def end(self) -> float:
        return max(w.end for w in self.words if w.end is not None)


@dataclass
class _Forced:
    """A forced alignment: per line, the (start, end) of each word (None for a word without a
    pronunciation), and how well it fits the audio: the log acoustic score of its path over its
    frames, silences included (comparable between alignments of the same window)."""

    times: list[list[Span | None]]
    fit: float
    frames: int


@dataclass
class _Missing:
    """Heard words the lyrics lack, kept as transcribed; they come after lyric line `after`."""

    after: int
    words: list[common_pb2.Word]


def transcript_from_lyrics(
    audio: Samples,
    lyrics: str,
    language: str,
    transcribe: Callable[[ProgressCallback], common_pb2.Transcript],
    progress: ProgressCallback = no_progress,
    judge: Judge | None = None,
) -> common_pb2.Transcript:
    """The user's lyrics (in `language`), line by line, timed against `audio` (the vocals stem, mono
    float32 at 16 kHz), anchored by `transcribe(progress)`'s words and checked by `judge` (step 6);
    lines not sung carry not_sung."""
    try:
        heard = transcribe(scaled(progress, 0.0, TRANSCRIBE_SHARE))
        heard_words = [w for s in heard.segments for w in s.words if normalize_word(w.text)]
    except Cancelled:
        raise
    except Exception:  # whatever the model hits, forced alignment alone still times the lyrics
        log.exception("transcribing the vocals failed; aligning the lyrics without anchors")
        heard_words = []
    segments = align_lyrics(audio, lyrics, heard_words, scaled(progress, TRANSCRIBE_SHARE, 100.0), judge)
    return common_pb2.Transcript(
        language=language.strip().lower(), segments=segments, model=ALIGNER_NAME, from_user_lyrics=True
    )


def align_lyrics(
    audio: Samples,
    lyrics: str,
    heard: Sequence[common_pb2.Word] = (),
    progress: ProgressCallback = no_progress,
    judge: Judge | None = None,
) -> list[common_pb2.Segment]:
    """One Segment per sung line of `lyrics` (repeats written out; not_sung for a line the audio
    does not hold), plus one per passage of `heard` words the lyrics lack (their words
    from_transcript), in time order. Words are ordered and do not overlap. Without `judge`, step 6
    judges no line. Raises Cancelled when `progress` or the run does."""
    parsed = parse_lyrics(lyrics)
    if not parsed:
        return []
    dictionary = _Dictionary()
    regions = speech_regions(audio)
    first_pass = scaled(progress, 0.0, FIRST_PASS_SHARE)
    lines, missing = _align(audio, parsed, heard, regions, dictionary, first_pass)
    checked = FIRST_PASS_SHARE + VOICE_CHECK_SHARE
    voice_check = scaled(progress, FIRST_PASS_SHARE, checked)
    if regions and _fits_better_warped(audio, lines, dictionary, voice_check):
        dictionary.warp = HIGH_VOICE_WARP
        second_pass = scaled(progress, checked, 100.0)
        lines, missing = _align(audio, parsed, heard, regions, dictionary, second_pass)
    if judge is not None:
        _heard_instead(audio, lines, missing, heard, judge)
    _keep_uncovered(lines, missing, heard)
    _move_onto_onsets(audio, lines, missing)
    progress(100.0, "lyrics aligned")
    return _segments(lines, missing)


def _align(
    audio: Samples,
    parsed: list[LyricLine],
    heard: Sequence[common_pb2.Word],
    regions: list[Span],
    dictionary: _Dictionary,
    progress: ProgressCallback,
) -> tuple[list[_Line], list[_Missing]]:
    """Steps 2-5 of the module's docstring, with `dictionary`'s decoders."""
    lines = [_Line(line.text, [_Word(t, dictionary.key(t)) for t in line.words]) for line in parsed]
    duration = len(audio) / SAMPLE_RATE
    aligner = _Aligner(dictionary, audio, regions, duration, progress)
    missing = _anchor(lines, list(heard), regions)
    aligner.align_anchored(lines, missing)
    if regions:  # with no singing heard anywhere there is nothing to tell sung lines from others by
        aligner.align_gaps(lines, missing)
    _spread_unaligned(lines, regions, duration)
    _make_ordered([w for line in lines if line.sung for w in line.words])
    return lines, missing


def _fits_better_warped(
    audio: Samples, lines: list[_Line], dictionary: _Dictionary, progress: ProgressCallback = no_progress
) -> bool:
    """Whether the sung lines (those with anchors, when some have) fit the audio better with the
    features warped for a shorter vocal tract (HIGH_VOICE_WARP) than unwarped, each line
    force-aligned again both ways in the span it was put in: the same windows and words, so only
    the voice decides (maximum-likelihood vocal tract length normalisation, over two warps)."""
    warps = (1.0, HIGH_VOICE_WARP)
    fit = dict.fromkeys(warps, 0.0)
    frames = dict.fromkeys(warps, 0)
    timed = [line for line in lines if line.sung and line.timed]
    # The lines with anchors where there are some: a line put where another is sung fits either
    # way badly, and as often better warped.
    chosen = [line for line in timed if line.anchors] or timed
    for k, line in enumerate(chosen):
        check_cancelled()
        progress(100.0 * k / len(chosen), f"checking the voice: line {k + 1} of {len(chosen)}")
        start, end = max(0.0, line.start - WARP_MARGIN_SECONDS), line.end + WARP_MARGIN_SECONDS
        both = [_forced(dictionary.decoder(warp), audio, [line.words], start, end) for warp in warps]
        if None in both:  # a line only one way fits says nothing of the voice
            continue
        for warp, forced in zip(warps, both, strict=True):
            fit[warp] += forced.fit
            frames[warp] += forced.frames
    if not frames[1.0]:
        return False
    return fit[HIGH_VOICE_WARP] / frames[HIGH_VOICE_WARP] - fit[1.0] / frames[1.0] > MIN_WARP_GAIN


# --- anchors ---


def _anchor(lines: list[_Line], heard: list[common_pb2.Word], regions: list[Span]) -> list[_Missing]:
    """Sets each line's anchors from the alignment of its words to the heard words; returns the
    passages of heard words that the lyrics lack. A lyric word is expected as far into the singing
    as it is into the lyrics, a heard word as far as the singing before it."""
    owners = [(k, i) for k, line in enumerate(lines) for i in range(len(line.words))]
    lyric_keys = [normalize_word(w.text) for line in lines for w in line.words]
    heard_keys = [normalize_word(w.text) for w in heard]
    singing = _speech_seconds(regions, 0.0, math.inf) or 1.0
    positions = (
        [i / len(lyric_keys) for i in range(len(lyric_keys))],
        [_speech_seconds(regions, 0.0, w.start) / singing for w in heard],
    )
    pairs = align_words(lyric_keys, heard_keys, positions=positions)
    # Near matches ("gonna"/"going") keep the alignment in step but anchor nothing: "the lights"
    # nearly matches "the night" of another line.
    paired = {(a, b) for a, b in pairs if lyric_keys[a] == heard_keys[b]}
    for a, b in sorted(paired):
        in_run = any(
            (a + step, b + step) in paired
            and 0 <= a + step < len(owners)
            and owners[a + step][0] == owners[a][0]
            for step in (-1, 1)
        )
        lone = len(lyric_keys[a]) >= LONE_ANCHOR_LETTERS and heard[b].confidence >= LONE_ANCHOR_CONFIDENCE
        if in_run or lone:
            k, i = owners[a]
            lines[k].anchors.append((i, heard[b]))
    missing = []
    for (a0, b0), (a1, b1) in zip([(-1, -1), *pairs], [*pairs, (len(lyric_keys), len(heard))], strict=True):
        # Heard words with no lyric word between, at a line's end: a line the lyrics lack.
        at_line_end = a0 < 0 or a1 >= len(lyric_keys) or owners[a0][0] != owners[a1][0]
        if a1 == a0 + 1 and at_line_end and b1 - b0 - 1 >= MIN_MISSING_WORDS:
            after = owners[a0][0] if a0 >= 0 else -1
            missing.append(_Missing(after, heard[b0 + 1 : b1]))
    return missing


class _HeardWords:
    """The heard words in time order, knowing which a passage the lyrics lack already holds."""

    def __init__(self, heard: Sequence[common_pb2.Word], missing: list[_Missing]) -> None:
        self.words = heard
        self.kept = {id(w) for passage in missing for w in passage.words}
        self.middles = [(w.start + w.end) / 2 for w in heard]

    def over(self, line: _Line) -> list[common_pb2.Word]:
        """Those not kept whose middle is in the line's span or HEARD_MARGIN_SECONDS from it."""
        first = bisect.bisect_left(self.middles, line.start - HEARD_MARGIN_SECONDS)
        stop = bisect.bisect_right(self.middles, line.end + HEARD_MARGIN_SECONDS)
        return [w for w in self.words[first:stop] if id(w) not in self.kept]


def _heard_instead(
    audio: Samples,
    lines: list[_Line],
    missing: list[_Missing],
    heard: Sequence[common_pb2.Word],
    judge: Judge,
) -> None:
    """Step 6: each line placed without anchors over at least MIN_MISSING_WORDS heard words that the
    judge finds over MIN_HEARD_ADVANTAGE likelier there than the line is not sung (its words are
    then kept by _keep_uncovered)."""
    words = _HeardWords(heard, missing)
    for line in lines:
        if not line.sung or line.anchors or not line.timed:
            continue
        check_cancelled()
        over = words.over(line)
        if len(over) < MIN_MISSING_WORDS:
            continue
        first = max(0, round((line.start - JUDGED_MARGIN_SECONDS) * SAMPLE_RATE))
        samples = audio[first : round((line.end + JUDGED_MARGIN_SECONDS) * SAMPLE_RATE)]
        scores = judge(samples, [line.text, " ".join(w.text for w in over)])
        if scores is not None and scores[1] - scores[0] > MIN_HEARD_ADVANTAGE:
            line.sung = False
            log.info("line %r not sung: the model heard %r there", line.text, " ".join(w.text for w in over))


def _keep_uncovered(lines: list[_Line], missing: list[_Missing], heard: Sequence[common_pb2.Word]) -> None:
    """Runs of at least MIN_MISSING_WORDS heard words that no sung line covers (a line the lyrics
    lack, sung where a line left out was put) are passages the lyrics lack."""
    words = _HeardWords(heard, missing)
    # In time order (the sung lines' words were made ordered); a line spread over the singing (step
    # 5) covers it too.
    sung = [
        (k, line)
        for k, line in enumerate(lines)
        if line.sung and any(w.start is not None for w in line.words)
    ]
    covered = words.kept | {id(w) for _, line in sung for w in words.over(line)}
    starts = [line.start for _, line in sung]
    run: list[common_pb2.Word] = []
    after = -1

    def close() -> None:
        if len(run) >= MIN_MISSING_WORDS:
            missing.append(_Missing(after, list(run)))
        run.clear()

    for word, middle in zip(words.words, words.middles, strict=True):
        if id(word) in covered:
            close()
            continue
        last = bisect.bisect_right(starts, middle) - 1  # the last sung line starting before it
        before = sung[last][0] if last >= 0 else -1
        if run and before != after:
            close()
        after = before
        run.append(word)
    close()


# --- forced alignment ---


class _Aligner:
    def __init__(
        self,
        dictionary: _Dictionary,
        audio: Samples,
        regions: list[Span],
        duration: float,
        progress: ProgressCallback,
    ) -> None:
        self.dictionary = dictionary
        self.audio = audio
        self.regions = regions
        self.duration = duration
        self.progress = progress
        self.reached = 0.0  # percent: progress never steps back between the passes
        self.word_seconds = DEFAULT_WORD_SECONDS

    def align_anchored(self, lines: list[_Line], missing: list[_Missing]) -> None:
        """Force-aligns each line with anchors in a window around them, one line at a time."""
        floor = 0.0
        for k, line in enumerate(lines):
            for passage in missing:
                if passage.after < k:
                    floor = max(floor, passage.words[-1].end)
            if not line.anchors:
                continue
            self._report(ANCHORED_SHARE * k / len(lines), f"aligning lyrics: line {k + 1} of {len(lines)}")
            ceiling = self._next_start(lines, missing, k)
            (first, first_heard), (last, last_heard) = line.anchors[0], line.anchors[-1]
            lead = first * WORD_SECONDS + WINDOW_MARGIN_SECONDS
            tail = (len(line.words) - 1 - last) * WORD_SECONDS + WINDOW_MARGIN_SECONDS
            start = max(floor, first_heard.start - lead)
            end = min(ceiling, last_heard.end + tail)
            forced = self._force([line.words], start, end) if end > start else None
            if forced is not None:
                _set_times(line.words, forced.times[0], ALIGNED_CONFIDENCE)
                for index, word in line.anchors:
                    line.words[index].confidence = max(ALIGNED_CONFIDENCE, word.confidence)
            else:  # the heard times of its anchors, the rest spread between them
                for index, word in line.anchors:
                    target = line.words[index]
                    target.start, target.end = max(word.start, floor), max(word.end, floor)
                    target.confidence, target.heard = word.confidence, True
            floor = max(floor, line.end)

    def align_gaps(self, lines: list[_Line], missing: list[_Missing]) -> None:
        """Aligns each run of lines without anchors in the gap between its timed neighbours; a
        line the gap does not hold is marked not sung."""
        self.word_seconds = _word_seconds(lines)
        k = 0
        while k < len(lines):
            if lines[k].timed:
                k += 1
                continue
            stop = k
            while stop < len(lines) and not lines[stop].timed:
                stop += 1
            self._report(
                ANCHORED_SHARE + (100.0 - ANCHORED_SHARE) * k / len(lines),
                f"aligning lyrics: line {k + 1} of {len(lines)}",
            )
            self._align_gap(lines[k:stop], *self._gap(lines, missing, k, stop))
            k = stop

    def _gap(self, lines: list[_Line], missing: list[_Missing], first: int, stop: int) -> Span:
        start = max(
            [0.0]
            + [line.end for line in lines[:first] if line.timed]
            + [p.words[-1].end for p in missing if p.after < first]
        )
        end = min(
            [self.duration]
            + [line.start for line in lines[stop:] if line.timed]
            + [p.words[0].start for p in missing if p.after >= stop - 1]
        )
        return start, max(start, end)

    def _align_gap(self, block: list[_Line], start: float, end: float) -> None:
        """All of the block's lines are aligned in the gap; those whose words land where nobody
        sings are not sung, and the rest are aligned again without them."""
        shortest = min(len(line.words) for line in block)
        if _speech_seconds(self.regions, start, end) < MIN_GAP_VOICE_SHARE * shortest * self.word_seconds:
            for line in block:
                line.sung = False
            return
        if end - start > MAX_GAP_SECONDS:  # no anchors for long: every line taken as sung
            self._align_windows([w for line in block for w in line.words if w.key], start, end)
            return
        voiced = [(a, b) for a, b in self.regions if b > start and a < end]
        end = min(end, voiced[-1][1] + LEAD_IN_SECONDS)
        self._align_in(block, max(start, voiced[0][0] - LEAD_IN_SECONDS), end)
        if all(line.sung for line in block) or voiced[0][0] >= start or len(voiced) < 2:
            return
        # The gap opens on singing that began before it: the line before holds a note longer than
        # it was aligned to, and the lines put on its tail land where nobody sings. They are
        # aligned again from the next singing, which is kept when more of them are sung there.
        first_try = [(line.sung, [dataclasses.replace(w) for w in line.words]) for line in block]
        for line in block:
            line.sung = True
        self._align_in(block, max(start, voiced[1][0] - LEAD_IN_SECONDS), end)
        if sum(line.sung for line in block) <= sum(sung for sung, _ in first_try):
            for line, (sung, words) in zip(block, first_try, strict=True):
                line.sung, line.words = sung, words

    def _align_in(self, block: list[_Line], start: float, end: float) -> None:
        """The block's lines aligned in [start, end); those whose words land where nobody sings,
        and the one left out when no path runs through them all, are not sung."""
        sung = block
        for attempt in range(2):
            for line in sung:
                _set_times(line.words, [None] * len(line.words), INTERPOLATED_CONFIDENCE)
            forced = self._force([line.words for line in sung], start, end)
            if forced is None:
                sung, forced = self._without_one(sung, start, end)
            if not sung:
                return
            if forced is None:  # no path through them all: as many as fit, window by window
                self._align_windows([w for line in sung for w in line.words if w.key], start, end)
                return
            for line, times in zip(sung, forced.times, strict=True):
                _set_times(line.words, times, ALIGNED_CONFIDENCE)
            silent = [line for line in sung if line.timed and not self._voiced(line)]
            for line in silent:
                line.sung = False
            sung = [line for line in sung if line.sung]
            if not silent or not sung:
                return
            if attempt == 1:
                for line in sung:  # no third try: their times were made with the silent lines in
                    _set_times(line.words, [None] * len(line.words), INTERPOLATED_CONFIDENCE)

    def _without_one(
        self, block: list[_Line], start: float, end: float
    ) -> tuple[list[_Line], _Forced | None]:
        """The block's lines but one, and their alignment, when no path runs through them all: the
        one left out (not sung) is the one whose leaving out fits the audio best. The aligner finds
        a path through a line where it is sung (162 of 163 sung lines of two song sets), and none
        through a third of lines put where another is sung (55 of 163), so a block with no path
        holds a line not sung there, typically pasted in place of the sung one. The block and None
        when no such path, or the block is too long to try each line."""
        if len(block) == 1:
            block[0].sung = False
            return [], None
        if len(block) > MAX_LINES_LEFT_OUT_IN_TURN:
            return block, None
        best: tuple[int, _Forced] | None = None
        for k in range(len(block)):
            check_cancelled()
            forced = self._force([line.words for line in block[:k] + block[k + 1 :]], start, end)
            if forced is not None and (best is None or forced.fit > best[1].fit):
                best = (k, forced)
        if best is None:
            return block, None
        left_out, forced = best
        block[left_out].sung = False
        return block[:left_out] + block[left_out + 1 :], forced

    def _voiced(self, line: _Line) -> bool:
        """Whether singing fills enough of the span the line's words were put in."""
        start, end = line.start, line.end
        return _speech_seconds(self.regions, start, end) >= MIN_LINE_VOICE_SHARE * max(end - start, 1e-3)

    def _next_start(self, lines: list[_Line], missing: list[_Missing], k: int) -> float:
        """Where the next thing heard after line k begins: the next anchored line (its first
        anchor, less the time its words before that take sung fast), or a passage the lyrics
        lack."""
        starts = [p.words[0].start for p in missing if p.after >= k]
        following = next((line for line in lines[k + 1 :] if line.anchors), None)
        if following is not None:
            index, heard = following.anchors[0]
            starts.append(heard.start - index * FAST_WORD_SECONDS)
        return min(starts, default=self.duration)

    def _report(self, percent: float, message: str) -> None:
        check_cancelled()
        self.reached = max(self.reached, percent)
        self.progress(self.reached, message)

    def _force(self, lines: list[list[_Word]], start: float, end: float) -> _Forced | None:
        return _forced(self.dictionary.decoder(), self.audio, lines, start, end)

    def _align_windows(self, words: list[_Word], start: float, end: float) -> None:
        """Times `words` (all with dictionary keys) in [start, end) window by window; words left
        untimed are those of failed windows and any the aligner did not fit before the end."""
        position = start
        next_word = 0
        while next_word < len(words):
            upcoming = [a for a, b in self.regions if b > position and a < end]
            if not upcoming:
                return
            window_start = max(position, upcoming[0] - LEAD_IN_SECONDS)
            window_end = min(window_start + WINDOW_SECONDS, end)
            self._report(
                ANCHORED_SHARE + (100.0 - ANCHORED_SHARE) * window_start / self.duration,
                f"aligning lyrics: {window_start:.0f} s of {self.duration:.0f} s",
            )
            batch = words[next_word : next_word + int(MAX_WORDS_PER_SECOND * WINDOW_SECONDS)]
            keys = [w.key for w in batch if w.key]
            last = window_end >= end
            spans = None
            if last and len(batch) == len(words) - next_word:
                # The rest of the gap: all the words left are sung in it. A grammar that may end
                # early drops a last word whose match is weak (a held note fading out).
                spans = _align_window(
                    self.dictionary.decoder(), self.audio, window_start, window_end, keys, True
                )
            if spans is None:
                spans = _align_window(
                    self.dictionary.decoder(), self.audio, window_start, window_end, keys, False
                )
            keep_before = window_end if last else window_start + COMMIT_SECONDS
            if spans is None:
                left = _speech_seconds(self.regions, window_start, end)
                share = _speech_seconds(self.regions, window_start, keep_before) / left if left else 1.0
                next_word += max(1, round(share * (len(words) - next_word)))
                position = keep_before
                continue
            kept = [t for t in spans if t[0] < keep_before]
            _set_times(batch[: len(kept)], kept, ALIGNED_CONFIDENCE)
            next_word += len(kept)
            if last:
                return
            position = kept[-1][1] if kept else keep_before


def _forced(
    decoder: Decoder, audio: Samples, lines: list[list[_Word]], start: float, end: float
) -> _Forced | None:
    """All of `lines` sung in [start, end) of `audio`, timed by `decoder` (a fresh one); None when
    pocketsphinx fails."""
    keys = [w.key for line in lines for w in line if w.key]
    timed = _align_window(decoder, audio, start, end, keys, complete=True)
    if timed is None:
        return None
    segments = list(decoder.seg()) if keys else []  # no word, nothing decoded
    spans = iter(timed)
    return _Forced(
        [[next(spans) if w.key else None for w in line] for line in lines],
        sum(math.log(max(segment.ascore, 1e-300)) for segment in segments),
        sum(segment.end_frame + 1 - segment.start_frame for segment in segments),
    )


def _word_seconds(lines: list[_Line]) -> float:
    """The median seconds per word of the lines timed so far: the song's pace."""
    paces = [(line.end - line.start) / len(line.words) for line in lines if line.timed]
    return float(np.median(paces)) if paces else DEFAULT_WORD_SECONDS


def _set_times(words: Sequence[_Word], spans: Sequence[Span | None], confidence: float) -> None:
    """Words with a span are heard there; with None, they are untimed again."""
    for word, span in zip(words, spans, strict=False):
        word.start, word.end = span if span is not None else (None, None)
        word.confidence, word.heard = (
            (confidence, True) if span is not None else (INTERPOLATED_CONFIDENCE, False)
        )


def _align_window(
    decoder: Decoder, audio: Samples, start: float, end: float, keys: list[str], complete: bool
) -> list[Span] | None:
    """(start, end) seconds of the words of `keys` sung in [start, end) of `audio`, in order: all
    of them when `complete`, else the first few the aligner hears; None when pocketsphinx fails.
    `decoder` is a fresh one: pocketsphinx carries its cepstral mean over from one utterance to the
    next, and the same window decoded again then aligns differently or not at all."""
    count = len(keys)
    if count == 0:
        return []
    # States 0..count: word i leads from state i to i + 1; unless complete, any state may end it.
    transitions: list[tuple] = [(i, i + 1, 1.0, key) for i, key in enumerate(keys)]
    if not complete:
        transitions += [(i, count, 1.0) for i in range(count)]
    try:
        decoder.add_fsg("lyrics", decoder.create_fsg("lyrics", 0, count, transitions))
        decoder.activate_search("lyrics")
        decoder.start_utt()
        samples = audio[round(start * SAMPLE_RATE) : round(end * SAMPLE_RATE)]
        decoder.process_raw((np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16).tobytes(), full_utt=True)
        decoder.end_utt()
        segments = list(decoder.seg()) if decoder.hyp() is not None else []
    except (RuntimeError, ValueError):
        return None
    timed = []
    for segment in segments:
        if segment.word in _NON_WORDS or segment.word.startswith(("[", "+")):  # silence, fillers
            continue
        if len(timed) >= count or _ALTERNATIVE.sub("", segment.word) != keys[len(timed)]:
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


# --- words no alignment placed ---


def _spread_unaligned(lines: list[_Line], regions: list[Span], duration: float) -> None:
    """Gives each run of untimed words of the sung lines the sung time between its timed neighbours
    (in any sung line, or the audio's ends), shared in proportion to the words' length; evenly over
    the gap when nothing is sung there."""
    words = [w for other in lines if other.sung for w in other.words]
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


def _move_onto_onsets(audio: Samples, lines: list[_Line], missing: list[_Missing]) -> None:
    """Step 7: the sung lines' word starts moved onto their notes' onsets (onsets.onset_starts);
    the words the lyrics lack stay as heard, and no word is moved past one of them."""
    words: list[_Word | common_pb2.Word] = [
        w for line in lines if line.sung for w in line.words if w.start is not None and w.end is not None
    ]
    words += [w for passage in missing for w in passage.words]
    words.sort(key=lambda w: w.start)
    texts = [w.text if isinstance(w, _Word) else None for w in words]
    spans = onset_starts(audio, [(w.start, w.end) for w in words], texts)
    for word, (start, end) in zip(words, spans, strict=True):
        word.start, word.end = start, end


def _make_ordered(words: list[_Word]) -> None:
    """Each word starts at or after the previous one's end, and ends at or after its start."""
    previous_end = 0.0
    for word in words:
        assert word.start is not None and word.end is not None
        word.start = max(word.start, previous_end)
        word.end = max(word.end, word.start)
        previous_end = word.end


def _speech_time(spans: list[Span], fraction: float) -> float:
    """The time at `fraction` of the way through the total length of `spans`."""
    lengths = list(accumulate(b - a for a, b in spans))
    target = fraction * lengths[-1]
    span = min(bisect.bisect_left(lengths, target), len(spans) - 1)
    before = lengths[span - 1] if span else 0.0
    return spans[span][0] + (target - before)


def _speech_seconds(regions: list[Span], start: float, end: float) -> float:
    return sum(max(0.0, min(b, end) - max(a, start)) for a, b in regions)


def _segments(lines: list[_Line], missing: list[_Missing]) -> list[common_pb2.Segment]:
    def passage(p: _Missing) -> common_pb2.Segment:
        words = [
            common_pb2.Word(
                text=w.text,
                start=w.start,
                end=w.end,
                confidence=w.confidence,
                heard=True,
                from_transcript=True,
            )
            for w in p.words
        ]
        return common_pb2.Segment(
            text=" ".join(w.text for w in words), start=words[0].start, end=words[-1].end, words=words
        )

    segments = [passage(p) for p in missing if p.after < 0]
    for k, line in enumerate(lines):
        if line.sung:
            words = [
                common_pb2.Word(text=w.text, start=w.start, end=w.end, confidence=w.confidence, heard=w.heard)
                for w in line.words
            ]
            segments.append(
                common_pb2.Segment(text=line.text, start=words[0].start, end=words[-1].end, words=words)
            )
        else:
            words = [common_pb2.Word(text=w.text, confidence=INTERPOLATED_CONFIDENCE) for w in line.words]
            segments.append(common_pb2.Segment(text=line.text, words=words, not_sung=True))
        segments += [passage(p) for p in missing if p.after == k]
    return segments


# --- pronunciations ---


class _Dictionary:
    """CMUdict (pocketsphinx's en-us dictionary) plus the words made up for lyrics it lacks, and
    fresh decoders that know them all."""

    def __init__(self) -> None:
        self._lookup = _new_decoder()
        self._added: dict[str, str] = {}
        self.warp = 1.0  # the decoders' vocal tract length warp (see HIGH_VOICE_WARP)

    def key(self, text: str) -> str | None:
        """The dictionary word for a word of the lyrics, added to the dictionary when CMUdict
        lacks it ("don't" -> "don't", "rock-n-roll" -> "rock_n_roll", "1999" -> "1999"); None when
        no pronunciation can be made."""
        parts = normalized_words(text)
        if len(parts) == 1 and self._lookup.lookup_word(parts[0]):
            return parts[0]  # keeps CMUdict's alternative pronunciations
        pronunciations = [_pronunciation(self._lookup, part) for part in parts]
        if not parts or None in pronunciations:
            return None
        key = "_".join(parts)
        if self._lookup.lookup_word(key) is None:
            self._added[key] = " ".join(pronunciations)  # type: ignore[arg-type]
            self._lookup.add_word(key, self._added[key])
        return key

    def decoder(self, warp: float | None = None) -> Decoder:
        """A new decoder (0.1 s to load) with every word added so far, its features warped by
        `warp` (default: the dictionary's)."""
        decoder = _new_decoder(self.warp if warp is None else warp)
        for key, phones in self._added.items():
            decoder.add_word(key, phones)
        return decoder


def _new_decoder(warp: float = 1.0) -> Decoder:
    # Its Viterbi path is the alignment: the lattice's best path (bestpath) may end short of the
    # grammar's end and drop the last words. With the default beams (1e-48, 7e-29) a sung line
    # under band bleed often lost every path before the grammar's end (no alignment at all, or none
    # once the window moved by 10 ms); wider ones cost little on short windows.
    return Decoder(
        lm=None,
        bestpath=False,
        loglevel="FATAL",
        beam=BEAM,
        pbeam=BEAM,
        wbeam=WORD_BEAM,
        silprob=SILENCE_PROBABILITY,
        # Always given: pocketsphinx keeps the last decoder's warp for every decoder made after it
        # without one.
        warp_params=str(warp),
    )


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
