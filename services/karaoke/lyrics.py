"""Karaoke lines: the transcript's segments with their times as they are. The user's lyrics were
aligned once, in the transcription service (its segments are then their lines, a line not sung
marked not_sung); here the lines are only cleaned so that the format writers need no checks.

Every sung line this module returns has at least one word, and its words are ordered and do not
overlap (a word starts at or after the previous word's end). A line not sung keeps its words
without times.
"""

from __future__ import annotations

from itertools import accumulate

from roar.v1 import common_pb2


def karaoke_lines(transcript: common_pb2.Transcript) -> list[common_pb2.Segment]:
    """The transcript's segments, cleaned: empty words dropped, times made ordered and
    non-overlapping (Whisper's can step back a little; a karaoke display must not), a segment
    without words given its text's words spread over it, and a segment without any left out."""
    lines = []
    previous_end = 0.0
    for segment in transcript.segments:
        if segment.not_sung:
            lines.append(segment)
            continue
        words = [_stripped(w) for w in segment.words if w.text.strip()]
        if not words:
            texts = segment.text.split()
            words = [
                common_pb2.Word(text=text, start=start, end=end)
                for text, (start, end) in zip(texts, _spread(texts, segment.start, segment.end), strict=True)
            ]
        if not words:
            continue
        for word in words:
            word.start = max(word.start, previous_end)
            word.end = max(word.end, word.start)
            previous_end = word.end
        lines.append(
            common_pb2.Segment(
                text=" ".join(w.text for w in words), start=words[0].start, end=words[-1].end, words=words
            )
        )
    return lines


def _stripped(word: common_pb2.Word) -> common_pb2.Word:
    copy = common_pb2.Word()
    copy.CopyFrom(word)
    copy.text = word.text.strip()
    return copy


def _spread(texts: list[str], start: float, end: float) -> list[tuple[float, float]]:
    """Splits [start, end] among words in proportion to their length."""
    bounds = list(accumulate((max(len(t), 1) for t in texts), initial=0))
    span = max(end - start, 0.0)
    return [
        (start + span * bounds[k] / bounds[-1], start + span * bounds[k + 1] / bounds[-1])
        for k in range(len(texts))
    ]
