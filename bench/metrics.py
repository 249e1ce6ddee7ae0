"""Scores for the evaluation: separation SDR, word onset errors, word error rate, and the lines
an output reports as not sung.

The word error rate is roar.text.word_error_rate (re-exported here so that the harness needs one import).
Timed words are mappings with "word" and "start" (seconds), as in a synthetic song's truth.json;
convert roar.v1 Word messages with {"word": w.text, "start": w.start}.

The pipeline's words.json items are {"word", "start", "end", "confidence", "heard", "source", "sung"}
and its lines.json items {"text", "start", "end", "words", "sung"}: a lyric word or line that is not
sung has "sung": false and null times. A missing "sung" reads as true (outputs made before the key).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from roar.text import normalize_word, normalized_words, word_error_rate

__all__ = [
    "falsely_unsung",
    "onset_summary",
    "placed_words",
    "sdr",
    "share_within",
    "unsung_reported",
    "word_error_rate",
    "word_onset_errors",
]

TimedWord = Mapping[str, object]


def sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Plain signal-to-distortion ratio in dB, 10·log10(Σ ref² / Σ (ref − est)²), over all channels;
    both are trimmed to the shorter length (last axis). inf for a perfect estimate."""
    frames = min(reference.shape[-1], estimate.shape[-1])
    ref = reference[..., :frames].astype(np.float64)
    error = ref - estimate[..., :frames].astype(np.float64)
    error_energy = float(np.sum(error**2))
    if error_energy == 0.0:
        return float("inf")
    return float(10.0 * np.log10(np.sum(ref**2) / error_energy))


def word_onset_errors(truth_words: Sequence[TimedWord], hyp_words: Sequence[TimedWord]) -> list[float]:
    """|truth start − hypothesis start| in seconds for each matched word pair, in truth order.

    Words are matched by a monotonic alignment of their normalised text (roar.text.normalize_word): the
    most equal pairs in order, and among alignments with as many pairs the one with the smallest total
    onset error (so a repeated "the" pairs with its nearby namesake). Unmatched words (misheard,
    missing or extra) are excluded: len(result) is the match count; compare it with len(truth_words).
    """
    truth = [(normalize_word(str(w["word"])), float(w["start"])) for w in truth_words]
    hyp = [(normalize_word(str(w["word"])), float(w["start"])) for w in hyp_words]
    truth = [w for w in truth if w[0]]
    hyp = [w for w in hyp if w[0]]
    # best[i][j]: (matches, -total error) aligning truth[i:] with hyp[j:]; filled from the end.
    best = [[(0, 0.0)] * (len(hyp) + 1) for _ in range(len(truth) + 1)]
    for i in range(len(truth) - 1, -1, -1):
        for j in range(len(hyp) - 1, -1, -1):
            options = [best[i + 1][j], best[i][j + 1]]
            if truth[i][0] == hyp[j][0]:
                matches, score = best[i + 1][j + 1]
                options.append((matches + 1, score - abs(truth[i][1] - hyp[j][1])))
            best[i][j] = max(options)
    errors: list[float] = []
    i = j = 0
    while i < len(truth) and j < len(hyp):
        if best[i][j] == best[i + 1][j]:
            i += 1
        elif best[i][j] == best[i][j + 1]:
            j += 1
        else:
            errors.append(abs(truth[i][1] - hyp[j][1]))
            i += 1
            j += 1
    return errors


def onset_summary(errors: Sequence[float]) -> dict[str, float]:
    """Median and mean onset error (s), the share within 0.2 s, and the match count."""
    if not errors:
        return {"median": float("nan"), "mean": float("nan"), "within_0_2": 0.0, "count": 0}
    values = np.asarray(errors, dtype=np.float64)
    return {
        "median": float(np.median(values)),
        "mean": float(np.mean(values)),
        "within_0_2": float(np.mean(values <= 0.2)),
        "count": len(values),
    }


def _sung(item: Mapping[str, object]) -> bool:
    return item.get("sung", True) is not False


def placed_words(words: Sequence[Mapping[str, object]]) -> list[dict]:
    """The output words placed in time as sung ({"word", "start"}): not marked "sung": false, with a
    start."""
    return [
        {"word": str(w["word"]), "start": float(w["start"])}
        for w in words
        if _sung(w) and w.get("start") is not None
    ]


def share_within(truth_words: Sequence[TimedWord], hyp_words: Sequence[TimedWord], tolerance: float) -> float:
    """The share of the truth words paired (as in word_onset_errors) with a hypothesis word that starts
    within `tolerance` seconds of it; unpaired truth words are misses. NaN without truth words."""
    if not truth_words:
        return float("nan")
    errors = word_onset_errors(truth_words, hyp_words)
    return sum(e <= tolerance for e in errors) / len(truth_words)


def _reported_unsung(lines: Sequence[Mapping[str, object]]) -> list[list[str]]:
    return [normalized_words(str(line["text"])) for line in lines if not _sung(line)]


def unsung_reported(unsung_lines: Sequence[str], lines: Sequence[Mapping[str, object]]) -> float:
    """The share of `unsung_lines` (texts) that the output's lines report as not sung: a line with
    the same words, in normalised form, and "sung": false. NaN when there are no unsung lines."""
    if not unsung_lines:
        return float("nan")
    reported = _reported_unsung(lines)
    return sum(normalized_words(text) in reported for text in unsung_lines) / len(unsung_lines)


def falsely_unsung(unsung_lines: Sequence[str], lines: Sequence[Mapping[str, object]]) -> int:
    """How many output lines are reported as not sung but are not among `unsung_lines`: sung lines
    lost."""
    unsung = [normalized_words(text) for text in unsung_lines]
    return sum(words not in unsung for words in _reported_unsung(lines))
