"""The user's lyrics as the lines that are sung, in order: the one place that reads lyrics markup.

Users paste lyrics as lyric sites show them: section headers ("[Chorus]", "(Verse 2)", "Bridge:",
"[Chorus x2]"), blank lines between sections, a line sung several times in a row written once with a
repeat mark ("let it shine (x2)", "oh oh x3", "[2x]"), and a chorus written out once and then only
named by its header where it comes back. Headers and blank lines are not sung; a repeat mark
repeats its line; a header with no lines of its own repeats the last section of that name that had
some; "[Chorus x2]" sings its section twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Words that name a section of a song when a line holds nothing else (with a number, a colon, a
# performer's name after a colon, or a repeat mark).
_SECTION_NAMES = (
    "intro|outro|verse|pre-chorus|prechorus|post-chorus|chorus|refrain|hook|bridge|interlude|"
    "instrumental|solo|breakdown|coda|tag|break|drop|final chorus"
)
_REPEAT = r"(?:[x×]\s*(\d{1,2})|(\d{1,2})\s*[x×])"
# A whole line in brackets: "[Chorus]", "[Verse 2: Artist]", "[Chorus x2]".
_BRACKETED = re.compile(r"^\[(?P<name>[^\]]*)\]$")
# A bare header: "Chorus", "Verse 2:", "(Chorus)", "Chorus x2", "Bridge: Artist".
_HEADER = re.compile(
    rf"^\(?\s*(?P<name>(?:{_SECTION_NAMES})(?:\s*\d+)?)\s*(?::[^()\[\]]*)?\s*"
    rf"(?:\(?\s*{_REPEAT}\s*\)?)?\s*\)?\s*:?$",
    re.IGNORECASE,
)
# A repeat mark at the end of a sung line: "(x2)", "[x2]", "x2", "(2x)", "×3".
_LINE_REPEAT = re.compile(rf"\s*(?:[\[(]\s*{_REPEAT}\s*[\])]|(?<!\S){_REPEAT})\s*$", re.IGNORECASE)
# Repeats past this are a typo or an attack, not a song.
MAX_REPEATS = 16


@dataclass(frozen=True)
class LyricLine:
    text: str  # as the user wrote it, without a repeat mark
    words: tuple[str, ...]  # the line's words, split at white space, punctuation kept


def _times(match: re.Match[str]) -> int:
    """How many times a header or line with a repeat mark is sung (the mark's number)."""
    count = next((group for group in match.groups() if group and group.isdigit()), None)
    return min(max(int(count), 1), MAX_REPEATS) if count else 1


def _section(line: str) -> tuple[str, int] | None:
    """(section name, times sung) when the line is a section header, else None."""
    if bracketed := _BRACKETED.match(line):
        name = bracketed.group("name").split(":")[0]
        repeat = re.search(rf"(?:^|\s){_REPEAT}\s*$", name, re.IGNORECASE)
        times = _times(repeat) if repeat else 1
        name = name[: repeat.start()] if repeat else name
        return _section_key(name), times
    if header := _HEADER.match(line):
        return _section_key(header.group("name")), _times(header)
    return None


def _section_key(name: str) -> str:
    """ "Chorus 2", "chorus" and "CHORUS:" name the same section; a verse's number tells verses apart."""
    key = " ".join(name.lower().replace("-", "").split())
    return re.sub(r"\s*\d+$", "", key) if not key.startswith("verse") else key


def parse_lyrics(lyrics: str) -> list[LyricLine]:
    """The sung lines of the user's lyrics, repeats written out, markup left out."""
    sections: list[tuple[str | None, int, list[LyricLine]]] = [(None, 1, [])]
    for raw in lyrics.splitlines():
        line = raw.strip()
        if not line:
            continue
        if (section := _section(line)) is not None:
            sections.append((section[0], section[1], []))
            continue
        times = 1
        repeat = _LINE_REPEAT.search(line)
        if repeat and line[: repeat.start()].strip():  # "x2" alone is no line
            times = _times(repeat)
            line = line[: repeat.start()].rstrip()
        sections[-1][2].extend([LyricLine(line, tuple(line.split()))] * times)
    sung: list[LyricLine] = []
    bodies: dict[str, list[LyricLine]] = {}
    for name, times, lines in sections:
        if not lines and name is not None:
            lines = bodies.get(name, [])  # a chorus named again, not written out
        elif name is not None:
            bodies[name] = lines
        sung.extend(lines * times)
    return sung
