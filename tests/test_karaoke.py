"""The karaoke stage: lines from the transcript with its times as they are (the user's lyrics
come aligned, lines not sung marked), the lyric file formats (each parsed back), the song's
duration bounding every time, and the gRPC service."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import pytest

from roar.errors import BadInput
from roar.service import FileAssembler
from roar.v1 import common_pb2, karaoke_pb2, karaoke_pb2_grpc
from services.karaoke import formats
from services.karaoke.build import build_karaoke
from services.karaoke.lyrics import karaoke_lines
from services.karaoke.server import KaraokeServicer

# (word, start, end) as a transcription would report them, in two segments.
HEARD = [
    [("We", 0.5, 0.8), ("will", 0.9, 1.2), ("walk", 1.3, 1.7), ("along", 1.8, 2.2), ("the", 2.5, 2.6)],
    [("river", 2.7, 3.2), ("in", 3.3, 3.4), ("the", 3.5, 3.6), ("morning", 3.7, 4.2), ("light", 4.3, 4.9)],
]


def transcript(segments: list[list[tuple[str, float, float]]]) -> common_pb2.Transcript:
    out = common_pb2.Transcript(language="en")
    for k, words in enumerate(segments):
        out.segments.append(
            common_pb2.Segment(
                text=" ".join(w for w, _, _ in words),
                start=words[0][1] if words else 0.0,
                end=words[-1][2] if words else 0.0,
                words=[
                    # Whisper's words carry a leading space; confidences differ per word.
                    common_pb2.Word(text=f" {w}", start=s, end=e, confidence=0.5 + 0.01 * (10 * k + i))
                    for i, (w, s, e) in enumerate(words)
                ],
            )
        )
    return out


def line(*words: tuple[str, float, float]) -> common_pb2.Segment:
    return common_pb2.Segment(
        text=" ".join(w for w, _, _ in words),
        start=words[0][1],
        end=words[-1][2],
        words=[common_pb2.Word(text=w, start=s, end=e, confidence=0.9) for w, s, e in words],
    )


def assert_ordered(lines: list[common_pb2.Segment]) -> None:
    previous_end = 0.0
    for ln in lines:
        assert ln.words
        assert ln.start == ln.words[0].start and ln.end == ln.words[-1].end
        for w in ln.words:
            assert previous_end - 1e-9 <= w.start <= w.end
            previous_end = w.end


# --- line timing -------------------------------------------------------------------------------


def test_transcript_segments_become_lines_with_clean_times():
    t = transcript(HEARD)
    t.segments[0].words.insert(2, common_pb2.Word(text="  ", start=1.2, end=1.3))
    t.segments[1].words[0].start = 2.55  # starts before "the" ends
    t.segments[1].words[1].end = 3.25  # ends before it starts

    lines = karaoke_lines(t)

    assert [ln.text for ln in lines] == ["We will walk along the", "river in the morning light"]
    assert_ordered(lines)
    assert lines[1].words[0].start == pytest.approx(2.6)
    assert lines[1].words[1].end == pytest.approx(3.3)
    assert lines[0].words[2].confidence == pytest.approx(0.52)


def test_a_segment_without_words_spreads_its_text():
    t = common_pb2.Transcript(segments=[common_pb2.Segment(text=" aa bbbb ", start=1.0, end=4.0)])

    [only] = karaoke_lines(t)

    assert [(w.text, w.start, w.end) for w in only.words] == [("aa", 1.0, 2.0), ("bbbb", 2.0, 4.0)]


def aligned_lyrics() -> common_pb2.Transcript:
    """The user's lyrics as the transcription service aligns them: a line not sung, a word spread
    between its neighbours, and a passage the lyrics lack kept as heard."""
    first = line(("We", 0.5, 0.8), ("will", 0.9, 1.2), ("walk", 1.3, 1.7))
    first.words[1].heard = False
    for k in (0, 2):
        first.words[k].heard = True
    unsung = common_pb2.Segment(
        text="never sung here",
        words=[common_pb2.Word(text=w) for w in ["never", "sung", "here"]],
        not_sung=True,
    )
    missing = line(("oh", 2.0, 2.2), ("yeah", 2.3, 2.6))
    for word in missing.words:
        word.heard = word.from_transcript = True
    last = line(("along", 3.0, 3.4), ("the", 3.5, 3.6), ("river", 3.7, 4.2))
    for word in last.words:
        word.heard = True
    return common_pb2.Transcript(segments=[first, unsung, missing, last], from_user_lyrics=True)


def test_aligned_lyrics_keep_their_times_and_unsung_lines():
    lines = karaoke_lines(aligned_lyrics())

    assert [ln.text for ln in lines] == ["We will walk", "never sung here", "oh yeah", "along the river"]
    assert [ln.not_sung for ln in lines] == [False, True, False, False]
    assert [(w.start, w.end) for w in lines[3].words] == [(3.0, 3.4), (3.5, 3.6), (3.7, 4.2)]
    assert [w.heard for w in lines[0].words] == [True, False, True]
    assert all(w.from_transcript for w in lines[2].words)
    assert_ordered([ln for ln in lines if not ln.not_sung])


def test_json_files_carry_the_contract_and_timed_formats_skip_unsung_lines():
    lines = karaoke_lines(aligned_lyrics())
    files = {name: write(lines, "").encode() for name, write in formats.writers([]).items()}

    words = json.loads(files["words.json"])
    assert words[1] == {
        "word": "will", "start": 0.9, "end": 1.2, "confidence": 0.9, "heard": False, "source": "lyrics",
        "sung": True,
    }  # fmt: skip
    assert words[3] == {
        "word": "never", "start": None, "end": None, "confidence": 0.0, "heard": False, "source": "lyrics",
        "sung": False,
    }  # fmt: skip
    assert [w["source"] for w in words[6:8]] == ["transcript", "transcript"]
    assert all(w["heard"] for w in words[6:])
    rows = json.loads(files["lines.json"])
    assert rows[1] == {
        "text": "never sung here",
        "start": None,
        "end": None,
        "words": [3, 4, 5],
        "sung": False,
    }
    assert [r["sung"] for r in rows] == [True, False, True, True]
    assert (rows[3]["start"], rows[3]["end"]) == (3.0, 4.2)
    for name in ("lyrics.lrc", "lyrics.elrc", "lyrics.ass", "lyrics.vtt"):
        text = files[name].decode()
        assert "never" not in text and "walk" in text and "yeah" in text and "river" in text, name
    assert "[00:03.00]along the river" in files["lyrics.lrc"].decode()


# --- formats, each parsed back -----------------------------------------------------------------

# Thirds of a second: rounding each word's duration on its own would drift from the line's length.
LINES = [
    line(("Hello", 1.0, 4 / 3), ("{brave}", 4 / 3, 5 / 3), ("new\\N", 2.0, 7 / 3), ("world", 8 / 3, 3.004)),
    line(("a<b>&c", 3.5, 3.9), ("again", 4.0, 4.6)),
    line(("after", 12.0, 12.5), ("the", 12.5, 12.5), ("break", 12.5, 13.0)),
]


def lrc_time(tag: str) -> float:
    minutes, seconds = tag.split(":")
    return int(minutes) * 60 + float(seconds)


def test_lrc_has_a_tag_per_line_and_clears_long_gaps():
    text = formats.lrc(LINES, title="Song [live]")

    rows = text.splitlines()
    assert rows[0] == "[ti:Song (live)]"
    parsed = [re.fullmatch(r"\[(\d\d):(\d\d\.\d\d)\](.*)", row) for row in rows[1:]]
    assert all(parsed)
    entries = [(int(m[1]) * 60 + float(m[2]), m[3]) for m in parsed]
    assert entries == [
        (1.0, LINES[0].text),
        (3.5, LINES[1].text),
        (4.6, ""),  # the next line is 7.4 s away
        (12.0, LINES[2].text),
        (13.0, ""),
    ]


def test_enhanced_lrc_tags_every_word_in_order():
    text = formats.enhanced_lrc(LINES)

    rows = [row for row in text.splitlines() if "<" in row]
    assert len(rows) == len(LINES)
    for row, ln in zip(rows, LINES, strict=True):
        m = re.fullmatch(r"\[(\d\d:\d\d\.\d\d)\] (.*)", row)
        assert m and lrc_time(m[1]) == pytest.approx(ln.start)
        pieces = re.findall(r"<(\d\d:\d\d\.\d\d)>(?: (\S+))?", m[2])
        times = [lrc_time(t) for t, _ in pieces]
        assert times == sorted(times)
        assert times == pytest.approx([round(w.start, 2) for w in ln.words] + [round(ln.end, 2)])
        assert [w for _, w in pieces[:-1]] == [w.text for w in ln.words] and pieces[-1][1] == ""


def ass_cs(time: str) -> int:
    h, m, s = time.split(":")
    return round((int(h) * 3600 + int(m) * 60 + float(s)) * 100)


def test_ass_karaoke_tags_add_up_to_each_line():
    text = formats.ass(LINES, title="Song")

    sections = re.findall(r"^\[(.+)\]$", text, flags=re.MULTILINE)
    assert sections == ["Script Info", "V4+ Styles", "Events"]
    assert "Title: Song" in text
    style_format = re.search(r"^Format: (Name, .*)$", text, flags=re.MULTILINE)[1].split(", ")
    style = re.search(r"^Style: (.*)$", text, flags=re.MULTILINE)[1].split(",")
    assert len(style) == len(style_format)
    assert style[style_format.index("PrimaryColour")] != style[style_format.index("SecondaryColour")]

    dialogues = re.findall(
        r"^Dialogue: 0,([\d:.]+),([\d:.]+),Karaoke,,0,0,0,,(.*)$", text, flags=re.MULTILINE
    )
    assert len(dialogues) == len(LINES)
    for (start, end, body), ln in zip(dialogues, LINES, strict=True):
        assert ass_cs(start) == round(ln.start * 100) and ass_cs(end) == round(ln.end * 100)
        tags = re.findall(r"\{\\(kf?)(\d+)\}((?:[^{\\]|\\.)*)", body)
        assert sum(int(cs) for _, cs, _ in tags) == ass_cs(end) - ass_cs(start)
        sung = [word for kind, _, word in tags if kind == "kf"]
        unescaped = [re.sub(r"\\([{}])", r"\1", w).replace("\u2060", "").strip() for w in sung]
        assert unescaped == [w.text for w in ln.words]
        assert all(word == "" for kind, _, word in tags if kind == "k")  # gaps carry no text
    assert r"\{brave\}" in text and "new\\\u2060N" in text


def test_ass_word_starts_follow_the_words():
    text = formats.ass(LINES[:1])

    [(_, _, body)] = ass_events(text, "Karaoke")
    starts, cursor = [], 100
    for kind, cs in re.findall(r"\{\\(kf?)(\d+)\}", body):
        if kind == "kf":
            starts.append(cursor)
        cursor += int(cs)
    assert starts == [100, 133, 200, 267]


def vtt_seconds(time: str) -> float:
    h, m, s = time.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def test_vtt_cues_carry_word_timestamps():
    text = formats.vtt(LINES)

    assert text.startswith("WEBVTT\n\n")
    cues = text.strip().split("\n\n")[1:]
    assert len(cues) == len(LINES)
    for cue, ln in zip(cues, LINES, strict=True):
        timing, payload = cue.split("\n")
        m = re.fullmatch(r"(\d\d:\d\d:\d\d\.\d{3}) --> (\d\d:\d\d:\d\d\.\d{3})", timing)
        start, end = vtt_seconds(m[1]), vtt_seconds(m[2])
        assert (start, end) == (pytest.approx(ln.start, abs=5e-4), pytest.approx(ln.end, abs=5e-4))
        stamps = [vtt_seconds(t) for t in re.findall(r"<(\d\d:\d\d:\d\d\.\d{3})>", payload)]
        assert all(a < b for a, b in zip([start, *stamps], [*stamps, end], strict=True))
        plain = re.sub(r"<[^>]*>", "", payload)
        assert "<" not in plain and ">" not in plain
        assert plain.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&") == ln.text
    # Every word but the first of a line is stamped, except the zero-length "the" at 12.5 s.
    assert re.findall(r"<([\d:.]+)>(\S+)", cues[0]) == [
        ("00:00:01.333", "{brave}"),
        ("00:00:02.000", "new\\N"),
        ("00:00:02.667", "world"),
    ]
    assert "after the <00:00:12.500>break" not in cues[2] and "<00:00:12.500>" in cues[2]


def test_json_files_list_words_and_group_them_into_lines():
    words = json.loads(formats.words_json(LINES))
    lines = json.loads(formats.lines_json(LINES))

    flat = [w for ln in LINES for w in ln.words]
    assert [(w["word"], w["start"], w["end"]) for w in words] == [
        (w.text, round(w.start, 3), round(w.end, 3)) for w in flat
    ]
    assert all(w["confidence"] == 0.9 for w in words)
    assert [ln["text"] for ln in lines] == [ln.text for ln in LINES]
    assert [" ".join(words[i]["word"] for i in ln["words"]) for ln in lines] == [ln.text for ln in LINES]
    assert lines[1]["start"] == 3.5 and lines[1]["end"] == 4.6


def test_unicode_lyrics_survive_every_format():
    lines = karaoke_lines(
        transcript([[("Привет,", 1.0, 1.5), ("мир!", 1.6, 2.0)], [("夜空の星", 2.5, 3.0), ("♪", 3.0, 3.2)]])
    )
    files = {name: write(lines, "Песня").encode() for name, write in formats.writers([]).items()}

    for name, data in files.items():
        text = data.decode("utf-8")
        assert "Привет," in text and "夜空の星" in text, name
    assert json.loads(files["lines.json"])[1]["text"] == "夜空の星 ♪"
    assert "[ti:Песня]" in files["lyrics.lrc"].decode()


def test_format_table_names_the_files():
    assert set(formats.writers([])) == {
        "lyrics.lrc",
        "lyrics.elrc",
        "lyrics.ass",
        "lyrics.vtt",
        "words.json",
        "lines.json",
    }
    assert set(formats.writers([common_pb2.LYRICS_FORMAT_JSON])) == {"words.json", "lines.json"}
    with pytest.raises(BadInput, match="LYRICS_FORMAT_LRC"):
        formats.writers([common_pb2.LYRICS_FORMAT_UNSPECIFIED])


# --- the build: formats asked for, the song's duration ------------------------------------------


def options(**fields) -> karaoke_pb2.KaraokeOptions:
    return karaoke_pb2.KaraokeOptions(transcript=transcript(HEARD), **fields)


def test_the_build_writes_only_the_lyric_files_asked_for():
    reports = []

    files = build_karaoke(
        options(formats=[common_pb2.LYRICS_FORMAT_LRC], duration_seconds=10.0),
        lambda percent, message="": reports.append(percent),
    )

    assert set(files) == {"lyrics.lrc"}
    assert reports == sorted(reports) and reports[-1] == 100.0


def test_no_time_reaches_past_the_songs_end():
    files = build_karaoke(options(duration_seconds=4.0, formats=[common_pb2.LYRICS_FORMAT_JSON]))

    words = json.loads(files["words.json"])
    assert max(w["end"] for w in words) == 4.0
    assert [(w["start"], w["end"]) for w in words[-2:]] == [(3.7, 4.0), (4.0, 4.0)]
    untouched = build_karaoke(options(formats=[common_pb2.LYRICS_FORMAT_JSON]))  # 0: unknown
    assert json.loads(untouched["words.json"])[-1]["end"] == 4.9


@pytest.mark.parametrize("duration", [float("nan"), float("inf"), -1.0, 1e12])
def test_a_duration_that_is_no_length_is_bad_input(duration):
    with pytest.raises(BadInput, match="duration_seconds"):
        build_karaoke(options(duration_seconds=duration))


# --- the service -------------------------------------------------------------------------------


@asynccontextmanager
async def karaoke_stub() -> AsyncIterator[karaoke_pb2_grpc.KaraokeStub]:
    server = grpc.aio.server()
    karaoke_pb2_grpc.add_KaraokeServicer_to_server(KaraokeServicer(asyncio.Semaphore(2)), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield karaoke_pb2_grpc.KaraokeStub(channel)
    finally:
        await server.stop(grace=None)


async def test_service_streams_progress_then_files():
    opts = karaoke_pb2.KaraokeOptions(transcript=aligned_lyrics(), title="Test", duration_seconds=6.0)
    kinds, progress, files = [], [], FileAssembler()

    async with karaoke_stub() as stub:
        async for response in stub.Build(karaoke_pb2.BuildRequest(options=opts)):
            kinds.append(response.WhichOneof("response"))
            if response.HasField("progress"):
                progress.append(response.progress.percent)
            else:
                files.add(response.file)

    first_file = kinds.index("file")
    assert kinds[:first_file] == ["progress"] * first_file and "progress" not in kinds[first_file:]
    assert progress[-1] == 100.0
    assert set(files.files) == set(formats.writers([]))
    lrc = files.files["lyrics.lrc"].decode()
    assert "[00:00.50]We will walk" in lrc and "never sung" not in lrc
    assert json.loads(files.files["lines.json"])[1]["sung"] is False


@pytest.mark.parametrize(
    "request_options",
    [
        karaoke_pb2.KaraokeOptions(duration_seconds=float("nan")),
        karaoke_pb2.KaraokeOptions(formats=[99]),
        karaoke_pb2.KaraokeOptions(
            transcript=common_pb2.Transcript(segments=[common_pb2.Segment(text="a", start=-1.0, end=1.0)])
        ),
    ],
    ids=["nan-duration", "unknown-format", "negative-time"],
)
async def test_service_rejects_bad_requests(request_options):
    async with karaoke_stub() as stub:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            async for _ in stub.Build(karaoke_pb2.BuildRequest(options=request_options)):
                pass

    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def ass_events(text: str, style: str) -> list[tuple[int, int, str]]:
    """(start cs, end cs, text) of every Dialogue of one style."""
    found = re.findall(rf"^Dialogue: \d+,([\d:.]+),([\d:.]+),{style},,0,0,0,,(.*)$", text, flags=re.MULTILINE)
    return [(ass_cs(start), ass_cs(end), body) for start, end, body in found]


def test_ass_previews_each_line_beneath_the_one_sung_before_it():
    text = formats.ass(LINES)

    # The first line and the one after the 8-s break are previewed from their lead-in on; the
    # second from the start of the line before it, while that one is sung.
    assert ass_events(text, "Next") == [
        (0, 100, "Hello \\{brave\\} new\\\u2060N world"),
        (100, 350, "a<b>&c again"),
        (900, 1200, "after the break"),
    ]
    style = {s.split(",")[0]: s.split(",") for s in re.findall(r"^Style: (.*)$", text, flags=re.MULTILINE)}
    # Dimmer (partly transparent) than the sung line, and beneath it (smaller margin from the bottom).
    assert int(style["Next"][3][2:4], 16) > int(style["Karaoke"][3][2:4], 16)
    assert int(style["Next"][21]) < int(style["Karaoke"][21])


def test_ass_counts_in_the_first_line_and_lines_after_a_long_break():
    text = formats.ass(LINES)

    # The first line starts at 1 s: only the last second of its countdown fits in the song; the
    # line at 12 s (8 s after the last word) gets all three; the one 0.4 s after another gets none.
    dot = "\u25cf"
    assert ass_events(text, "Countdown") == [
        (0, 100, dot),
        (900, 1000, f"{dot} {dot} {dot}"),
        (1000, 1100, f"{dot} {dot}"),
        (1100, 1200, dot),
    ]
    later = formats.ass([line(("late", 4.0, 4.5))])
    assert [events[:2] for events in ass_events(later, "Countdown")] == [(100, 200), (200, 300), (300, 400)]
