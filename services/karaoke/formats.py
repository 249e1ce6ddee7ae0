"""Lyric file writers: each a plain function of karaoke lines (and a title) to the file's text.

Lines are common_pb2.Segments with ordered, non-overlapping words (as lyrics.karaoke_lines makes
them); times are seconds. All text stays UTF-8, so lyrics in any script survive. A line of the user's
lyrics that is not sung (Segment.not_sung) has no times: the JSON files list it with "sung": false,
the timed formats leave it out.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

from roar.errors import BadInput
from roar.v1 import common_pb2

Lines = list[common_pb2.Segment]

# An LRC display keeps showing a line until the next time tag: when the next line is more than this many
# seconds away, an empty tag at the line's end clears it.
LRC_CLEAR_AFTER_SECONDS = 5.0
_BRACKETS_TO_PARENTHESES = str.maketrans("[]", "()")


def lrc(lines: Lines, title: str = "") -> str:
    """Line-level LRC: `[mm:ss.xx]line text`."""
    return _lrc(lines, title, lambda line: line.text)


def enhanced_lrc(lines: Lines, title: str = "") -> str:
    """Word-level enhanced LRC (A2 extension): `[mm:ss.xx] <mm:ss.xx> word <mm:ss.xx> word ... <end>`."""

    def words(line: common_pb2.Segment) -> str:
        tagged = [f"<{_lrc_time(w.start)}> {w.text}" for w in line.words]
        return " " + " ".join([*tagged, f"<{_lrc_time(line.end)}>"])

    return _lrc(lines, title, words)


def sung(lines: Lines) -> Lines:
    """The lines that are sung, the only ones a timed format shows."""
    return [line for line in lines if not line.not_sung]


def _lrc(lines: Lines, title: str, line_text: Callable[[common_pb2.Segment], str]) -> str:
    lines = sung(lines)
    out = []
    if title:
        # A bracket in the title would end the tag early.
        out.append(f"[ti:{_one_line(title).translate(_BRACKETS_TO_PARENTHESES)}]")
    for k, line in enumerate(lines):
        out.append(f"[{_lrc_time(line.start)}]{line_text(line)}")
        next_start = lines[k + 1].start if k + 1 < len(lines) else None
        # After the last line too, so the display does not keep it to the end of the song.
        if next_start is None or next_start - line.end > LRC_CLEAR_AFTER_SECONDS:
            out.append(f"[{_lrc_time(line.end)}]")
    return "\n".join(out) + "\n"


def _lrc_time(seconds: float) -> str:
    cs = _centiseconds(seconds)
    return f"{cs // 6000:02d}:{cs // 100 % 60:02d}.{cs % 100:02d}"


# ASS colours are &HAABBGGRR (alpha 00: opaque). Karaoke text starts in SecondaryColour and
# fills with PrimaryColour. The current line sits above the preview of the next one (bottom
# aligned, MarginV from the bottom), the countdown above both; each kind has its own layer, so
# libass never moves one out of another's way.
_ASS_HEADER = """\
[Script Info]
; Karaoke lyrics written by Roar
Title: {title}
ScriptType: v4.00+
WrapStyle: 0
ScaledBorderAndShadow: yes
PlayResX: 1920
PlayResY: 1080

[V4+ Styles]
Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, \
Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, \
Alignment, MarginL, MarginR, MarginV, Encoding
Style: Karaoke,Arial,72,&H0000D7FF,&H00FFFFFF,&H00000000,&H80000000,\
-1,0,0,0,100,100,0,0,1,4,2,2,80,80,230,1
Style: Next,Arial,56,&H60C8C8C8,&H60C8C8C8,&H00000000,&H80000000,\
0,0,0,0,100,100,0,0,1,3,0,2,80,80,90,1
Style: Countdown,Arial,64,&H0000D7FF,&H0000D7FF,&H00000000,&H80000000,\
-1,0,0,0,100,100,0,0,1,3,0,2,80,80,360,1

[Events]
Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text
"""
# A line that follows this many seconds without singing (or opens the song) gets a lead-in: a
# countdown over the LEAD_IN_SECONDS before it, one dot fewer each second, and its preview only
# from then on (a preview shown through a long break would only distract).
LONG_BREAK_SECONDS = 5.0
LEAD_IN_SECONDS = 3
COUNTDOWN_DOT = "\u25cf"


def ass(lines: Lines, title: str = "") -> str:
    """Advanced SubStation Alpha karaoke: a Dialogue per line, `{\\kf<cs>}` per word (a fill sweep)
    and `{\\k<cs>}` with no text for the gaps, so every line's tags add up to its duration; each
    line is also shown ahead, dimmer, beneath the one being sung (style Next) and, after a long
    break or at the song's start, counted in (style Countdown)."""
    events = []
    timed = sung(lines)
    for k, line in enumerate(timed):
        start = _centiseconds(line.start)
        text, end = _ass_karaoke(line, start)
        events.append(f"Dialogue: 0,{_ass_time(start)},{_ass_time(end)},Karaoke,,0,0,0,,{text}")
        previous = timed[k - 1] if k else None
        if previous is not None and line.start - previous.end < LONG_BREAK_SECONDS:
            shown_from = _centiseconds(previous.start)
        else:
            events.extend(_ass_countdown(start))
            shown_from = max(start - 100 * LEAD_IN_SECONDS, 0)
        if shown_from < start:
            preview = _ass_escape(" ".join(w.text for w in line.words))
            events.append(f"Dialogue: 1,{_ass_time(shown_from)},{_ass_time(start)},Next,,0,0,0,,{preview}")
    header = _ASS_HEADER.format(title=_one_line(title) or "Karaoke")
    return header + "".join(event + "\n" for event in events)


def _ass_countdown(start: int) -> list[str]:
    """Countdown events before a line starting at `start` (centiseconds): LEAD_IN_SECONDS dots,
    one fewer each second; the part before the song's start is left out."""
    events = []
    for dots in range(LEAD_IN_SECONDS, 0, -1):
        begin, end = max(start - 100 * dots, 0), start - 100 * (dots - 1)
        if begin < end:
            text = " ".join([COUNTDOWN_DOT] * dots)
            events.append(f"Dialogue: 2,{_ass_time(begin)},{_ass_time(end)},Countdown,,0,0,0,,{text}")
    return events


def _ass_karaoke(line: common_pb2.Segment, line_start: int) -> tuple[str, int]:
    """The line's karaoke text and its end in centiseconds. Each boundary is rounded once, and
    durations are differences of rounded boundaries, so they sum exactly to the line's length."""
    parts = []
    cursor = line_start
    for k, word in enumerate(line.words):
        start = _centiseconds(word.start)
        if start > cursor:
            parts.append(f"{{\\k{start - cursor}}}")
            cursor = start
        end = max(_centiseconds(word.end), cursor)
        space = " " if k + 1 < len(line.words) else ""
        parts.append(f"{{\\kf{end - cursor}}}{_ass_escape(word.text)}{space}")
        cursor = end
    line_end = max(_centiseconds(line.end), cursor)
    if line_end > cursor:
        parts.append(f"{{\\k{line_end - cursor}}}")
    return "".join(parts), line_end


def _ass_escape(text: str) -> str:
    # A word joiner after a backslash keeps it from starting \N, \h or \{; libass reads \{ and \}
    # as literal braces.
    return text.replace("\\", "\\\u2060").replace("{", "\\{").replace("}", "\\}")


def _ass_time(cs: int) -> str:
    return f"{cs // 360000}:{cs // 6000 % 60:02d}:{cs // 100 % 60:02d}.{cs % 100:02d}"


def vtt(lines: Lines) -> str:
    """WebVTT: a cue per line, with an inline `<hh:mm:ss.mmm>` timestamp before each later word.

    WebVTT requires a timestamp to lie strictly between the cue's start and end and after the
    previous one; a word starting no later than that (a zero-length word) shares its neighbour's tag.
    """
    cues = ["WEBVTT"]
    for line in sung(lines):
        start = _milliseconds(line.start)
        end = max(_milliseconds(line.end), start + 1)  # a cue must end after it starts
        text = []
        last_tag = start
        for k, word in enumerate(line.words):
            word_start = _milliseconds(word.start)
            if k > 0 and last_tag < word_start < end:
                text.append(f"<{_vtt_time(word_start)}>{_vtt_escape(word.text)}")
                last_tag = word_start
            else:
                text.append(_vtt_escape(word.text))
        cues.append(f"{_vtt_time(start)} --> {_vtt_time(end)}\n{' '.join(text)}")
    return "\n\n".join(cues) + "\n"


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _vtt_time(ms: int) -> str:
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def words_json(lines: Lines) -> str:
    """Every word in order: [{"word", "start", "end", "confidence", "heard", "source", "sung"}],
    seconds to the millisecond. "heard": the audio placed the word (false: spread between its
    neighbours); "source": "lyrics" (the user's) or "transcript" (sung in a passage the lyrics lack,
    kept as heard); "sung": false, with null times, for the words of a line that is not sung."""
    words = [
        {
            "word": w.text,
            "start": None if line.not_sung else round(w.start, 3),
            "end": None if line.not_sung else round(w.end, 3),
            "confidence": round(w.confidence, 3),
            "heard": w.heard,
            "source": "transcript" if w.from_transcript else "lyrics",
            "sung": not line.not_sung,
        }
        for line in lines
        for w in line.words
    ]
    return _json_list(words)


def lines_json(lines: Lines) -> str:
    """[{"text", "start", "end", "words", "sung"}]: "words" lists the line's indices into words.json;
    a line not sung has "sung": false and null times."""
    out = []
    first = 0
    for line in lines:
        indices = list(range(first, first + len(line.words)))
        start, end = (None, None) if line.not_sung else (round(line.start, 3), round(line.end, 3))
        out.append(
            {"text": line.text, "start": start, "end": end, "words": indices, "sung": not line.not_sung}
        )
        first += len(line.words)
    return _json_list(out)


def _json_list(items: list[dict]) -> str:
    """A JSON list with one item per text line: small, and readable in a diff."""
    return "[\n" + ",\n".join(json.dumps(item, ensure_ascii=False) for item in items) + "\n]\n"


def _centiseconds(seconds: float) -> int:
    return max(round(seconds * 100), 0)


def _milliseconds(seconds: float) -> int:
    return max(round(seconds * 1000), 0)


def _one_line(text: str) -> str:
    return " ".join(text.split())


# Each lyrics format and the files it produces.
Writer = Callable[[Lines, str], str]
FILES: dict[int, dict[str, Writer]] = {
    common_pb2.LYRICS_FORMAT_LRC: {"lyrics.lrc": lrc},
    common_pb2.LYRICS_FORMAT_ENHANCED_LRC: {"lyrics.elrc": enhanced_lrc},
    common_pb2.LYRICS_FORMAT_ASS: {"lyrics.ass": ass},
    common_pb2.LYRICS_FORMAT_VTT: {"lyrics.vtt": lambda lines, title: vtt(lines)},
    common_pb2.LYRICS_FORMAT_JSON: {
        "words.json": lambda lines, title: words_json(lines),
        "lines.json": lambda lines, title: lines_json(lines),
    },
}


def writers(formats: Iterable[int]) -> dict[str, Writer]:
    """File name -> writer for the requested LyricsFormat values (none: every format)."""
    formats = list(formats) or list(FILES)
    unknown = [f for f in formats if f not in FILES]
    if unknown:
        names = ", ".join(common_pb2.LyricsFormat.Name(f) for f in FILES)
        raise BadInput(f"unknown lyrics format(s) {unknown}; use {names}")
    return {name: writer for f in formats for name, writer in FILES[f].items()}
