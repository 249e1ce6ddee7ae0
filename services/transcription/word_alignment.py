"""Monotonic alignment of two word sequences (the user's lyrics and the words a model heard) with
the least edit cost, within a band around the diagonal so that time and memory grow with the words
times the band: the anchors of lyric alignment.
"""

from __future__ import annotations

import functools

from roar.progress import check_cancelled
from roar.text import edit_distance

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
# Less than a match saves over skipping both words, so a match far from where it is expected
# still pairs when nothing nearer does.
POSITION_WEIGHT = 1.0
# How an alignment reaches a cell: pairing two words, or skipping one of the user's or the heard.
_DIAGONAL, _SKIP_USER, _SKIP_HEARD = 0, 1, 2


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


def align_words(
    user: list[str],
    heard: list[str],
    band_words: int = BAND_WORDS,
    positions: tuple[list[float], list[float]] | None = None,
) -> list[tuple[int, int]]:
    """Monotonic alignment of two word sequences with the least edit cost, among the paths that
    keep within the alignment band; returns the (user index, heard index) pairs of words that match
    exactly or nearly. `positions`, where each word of either side is expected in the song (0 to 1),
    adds POSITION_WEIGHT times their distance to each pairing: of two equal paths (a chorus heard
    once, written twice) the one that pairs words where they belong wins. Time and memory grow with
    the words times the band, not with their product. Raises Cancelled when the run it works for is
    cancelled."""
    if not user or not heard:
        return []
    band = alignment_band(len(user), len(heard), band_words)
    moves = _alignment_moves(user, heard, band, positions)
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


def _alignment_moves(
    user: list[str],
    heard: list[str],
    band: list[tuple[int, int]],
    positions: tuple[list[float], list[float]] | None = None,
) -> list[bytearray]:
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
                if positions is not None:
                    best += POSITION_WEIGHT * abs(positions[0][i - 1] - positions[1][j - 1])
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
