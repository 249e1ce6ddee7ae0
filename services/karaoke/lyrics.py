"""Karaoke lines: the transcript's segments, or the user's own lyrics timed by aligning their words
to the transcript's words.

Every line this module returns has at least one word, and its words are ordered and do not
overlap (a word starts at or after the previous word's end), so the format writers need no checks.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate

from roar.progress import check_cancelled
from roar.text import edit_distance, lyric_lines, normalize_word
from roar.v1 import common_pb2

# Lines such as "[Chorus]" or "[Verse 2]" name a section of the song; nobody sings them.
# Two words whose character edit distance is at most this share of the longer word's length are
# the same sung word ("gonna"/"going", "colour"/"color"), so they still anchor the timing.
_NEAR_MATCH = 0.4
# Alignment costs: skipping a word on either side, and pairing two different words. A mismatch
# costs as much as skipping both words, so a path through near matches beats one that pairs
# unrelated words just to keep the two sides in step.
_GAP_COST = 1.0
_MISMATCH_COST = 2.0
# The alignment keeps within this many words (of the longer side) of the diagonal scaled to the two
# lengths: room for a missing or extra verse or repeated choruses, while 100k characters of lyrics
# stay a few million cells (the full table of 20,000 by 20,000 words took 640 CPU-s and 1.1 GB).
BAND_WORDS = 300
# How an alignment reaches a cell: pairing two words, or skipping one of the user's or the heard.
_DIAGONAL, _SKIP_USER, _SKIP_HEARD = 0, 1, 2
# Seconds per word when the transcript has no words to measure the singing rate from.
_DEFAULT_WORD_SECONDS = 0.4


@dataclass
class _Timed:
    text: str
    start: float
    end: float
    confidence: float


def karaoke_lines(
    transcript: common_pb2.Transcript, user_lyrics: str = "", duration: float = 0.0
) -> list[common_pb2.Segment]:
    """The karaoke lines of a song.

    Without user lyrics: the transcript's segments, cleaned (empty words dropped, times made
    ordered and non-overlapping; a segment without words gets its text's words spread over it).

    With user lyrics (each non-blank line that is not a "[Section]" marker is a karaoke line): the
    user's words keep their spelling and punctuation and take the times of the transcript words
    they align to; the words between two aligned words share the gap between them in proportion
    to their length; words before the first / after the last aligned word sit just before / after
    it at the song's word rate (not before 0 s, not after `duration` when given). When the
    transcript has no words at all (e.g. an instrumental passage only), the lines are spread
    evenly over `duration` (seconds of audio) so the files are still usable, just not synced.
    Confidence is the transcript word's for aligned words and 0 for placed ones.
    """
    heard_lines = _transcript_lines(transcript)
    user_lines = lyric_lines(user_lyrics)
    if not user_lines:
        return [_segment(words) for words in heard_lines]
    heard = [word for words in heard_lines for word in words]
    user_words = [word for line in user_lines for word in line]
    if heard:
        times = _aligned_times(user_words, heard, duration)
    else:
        times = _evenly_spread(user_lines, duration or _DEFAULT_WORD_SECONDS * len(user_words))
    lines = []
    position = 0
    for line in user_lines:
        lines.append(_segment(times[position : position + len(line)]))
        position += len(line)
    return lines


def _transcript_lines(transcript: common_pb2.Transcript) -> list[list[_Timed]]:
    lines = []
    previous_end = 0.0
    for segment in transcript.segments:
        words = [
            _Timed(w.text.strip(), w.start, w.end, w.confidence) for w in segment.words if w.text.strip()
        ]
        if not words:
            texts = segment.text.split()
            words = [
                _Timed(text, start, end, 0.0)
                for text, (start, end) in zip(texts, _spread(texts, segment.start, segment.end), strict=True)
            ]
        for word in words:
            # Whisper's timestamps can step back a little; a karaoke display must not.
            word.start = max(word.start, previous_end)
            word.end = max(word.end, word.start)
            previous_end = word.end
        if words:
            lines.append(words)
    return lines


def _aligned_times(user_words: list[str], heard: list[_Timed], duration: float) -> list[_Timed]:
    anchors = dict(_align([normalize_word(w) for w in user_words], [normalize_word(w.text) for w in heard]))
    word_seconds = (heard[-1].end - heard[0].start) / len(heard) or _DEFAULT_WORD_SECONDS
    placed = {
        i: _Timed(user_words[i], heard[j].start, heard[j].end, heard[j].confidence)
        for i, j in anchors.items()
    }
    for first, stop in _unanchored_runs(len(user_words), anchors):
        texts = user_words[first:stop]
        if first > 0 and stop < len(user_words):
            start, end = heard[anchors[first - 1]].end, heard[anchors[stop]].start
        elif stop < len(user_words):
            end = heard[anchors[stop]].start
            start = max(0.0, end - word_seconds * len(texts))
        elif first > 0:
            start = heard[anchors[first - 1]].end
            end = start + word_seconds * len(texts)
            if duration > 0:
                end = max(start, min(end, duration))
        else:  # nothing aligned: the lyrics share the span the transcript heard singing in
            start, end = heard[0].start, heard[-1].end
        for k, (word_start, word_end) in enumerate(_spread(texts, start, end)):
            placed[first + k] = _Timed(texts[k], word_start, word_end, 0.0)
    return [placed[i] for i in range(len(user_words))]


def _unanchored_runs(count: int, anchors: dict[int, int]) -> Iterator[tuple[int, int]]:
    """[first, stop) index ranges of consecutive words without an anchor."""
    first = None
    for i in range(count + 1):
        if i < count and i not in anchors:
            first = i if first is None else first
        elif first is not None:
            yield first, i
            first = None


def alignment_band(rows: int, columns: int, band_words: int = BAND_WORDS) -> list[tuple[int, int]]:
    """The first and last column the alignment computes in each of its rows 0..rows: those within
    band_words (counted in the longer side's words) of the diagonal from (0, 0) to (rows, columns),
    and never fewer than a row's step along it, so that every row's band meets the next one's."""
    half_width = -(-band_words * columns // max(rows, columns, 1)) + -(-columns // max(rows, 1))
    bounds = []
    for i in range(rows + 1):
        centre_floor = i * columns // rows if rows else 0
        centre_ceil = -(-i * columns // rows) if rows else columns
        bounds.append((max(0, centre_floor - half_width), min(columns, centre_ceil + half_width)))
    return bounds


def _align(user: list[str], heard: list[str], band_words: int = BAND_WORDS) -> list[tuple[int, int]]:
    """Monotonic alignment of two word sequences with the least edit cost, among the paths that
    keep within the alignment band; returns the (user index, heard index) pairs of words that match
    exactly or nearly. Time and memory grow with the words times the band, not with their product.
    Raises Cancelled when the run it works for is cancelled."""
    if not user or not heard:
        return []
    band = alignment_band(len(user), len(heard), band_words)
    moves = _alignment_moves(user, heard, band)
    pairs = []
    i, j = len(user), len(heard)
    while i > 0 and j > 0:
        move = moves[i][j - band[i][0]]
        if move == _DIAGONAL:
            if _pair_cost(user[i - 1], heard[j - 1]) < _MISMATCH_COST:
                pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif move == _SKIP_USER:
            i -= 1
        else:
            j -= 1
    return pairs[::-1]


def _alignment_moves(user: list[str], heard: list[str], band: list[tuple[int, int]]) -> list[bytearray]:
    """moves[i][j - band[i][0]]: how the best alignment of user[:i] and heard[:j] ends, for the
    cells of the band (those outside it cost infinitely much). Raises Cancelled when the run it
    works for is cancelled."""
    inf = float("inf")
    first, last = band[0]
    previous = [j * _GAP_COST for j in range(first, last + 1)]
    moves = [bytearray([_SKIP_HEARD]) * (last - first + 1)]
    for i in range(1, len(user) + 1):
        check_cancelled()
        previous_first, previous_last = first, last
        first, last = band[i]
        current: list[float] = []
        row = bytearray(last - first + 1)
        word = user[i - 1]
        for j in range(first, last + 1):
            if j == 0:
                current.append(i * _GAP_COST)
                row[0] = _SKIP_USER
                continue
            best, move = inf, _DIAGONAL
            if previous_first <= j - 1 <= previous_last:
                best = previous[j - 1 - previous_first] + _pair_cost(word, heard[j - 1])
            if previous_first <= j <= previous_last and previous[j - previous_first] + _GAP_COST < best:
                best, move = previous[j - previous_first] + _GAP_COST, _SKIP_USER
            if j > first and current[-1] + _GAP_COST < best:
                best, move = current[-1] + _GAP_COST, _SKIP_HEARD
            current.append(best)
            row[j - first] = move
        moves.append(row)
        previous = current
    return moves


def _pair_cost(a: str, b: str) -> float:
    """0 for the same word, at most _NEAR_MATCH for a near match, _MISMATCH_COST otherwise."""
    if a == b:
        return 0.0 if a else _MISMATCH_COST  # a word of punctuation only matches nothing
    return _near_match_cost(a, b)


# Bounded: lyrics and a transcript of random words would otherwise keep a pair per cell.
@functools.lru_cache(maxsize=1 << 16)
def _near_match_cost(a: str, b: str) -> float:
    """The cost of pairing two different words: their share of edits if a near match."""
    longest = max(len(a), len(b))
    allowed = _NEAR_MATCH * longest
    # Cheap bounds first, which rule out most unrelated pairs: each edit changes the length by at
    # most one, and adds or removes at most two of the letters only one of the words has.
    if abs(len(a) - len(b)) > allowed or len(set(a).symmetric_difference(b)) > 2 * allowed:
        return _MISMATCH_COST
    distance = edit_distance(list(a), list(b)) / longest
    return distance if distance <= _NEAR_MATCH else _MISMATCH_COST


def _evenly_spread(lines: list[list[str]], duration: float) -> list[_Timed]:
    line_seconds = duration / len(lines)
    times = []
    for k, line in enumerate(lines):
        spans = _spread(line, k * line_seconds, (k + 1) * line_seconds)
        times += [_Timed(text, start, end, 0.0) for text, (start, end) in zip(line, spans, strict=True)]
    return times


def _spread(texts: list[str], start: float, end: float) -> list[tuple[float, float]]:
    """Splits [start, end] among words in proportion to their length."""
    bounds = list(accumulate((max(len(t), 1) for t in texts), initial=0))
    span = max(end - start, 0.0)
    return [
        (start + span * bounds[k] / bounds[-1], start + span * bounds[k + 1] / bounds[-1])
        for k in range(len(texts))
    ]


def _segment(words: list[_Timed]) -> common_pb2.Segment:
    return common_pb2.Segment(
        text=" ".join(w.text for w in words),
        start=words[0].start,
        end=words[-1].end,
        words=[
            common_pb2.Word(text=w.text, start=w.start, end=w.end, confidence=w.confidence) for w in words
        ],
    )
