"""Synthetic songs with known stems and word timings, for evaluating separation and lyric alignment.

A song is drums, a bass line and chords on a beat grid, one chord a bar of a pop progression
(I–V–vi–IV and relatives) in a random major key, with espeak-ng singing the lyrics: one espeak
utterance per word at the pitch of a melody note, on the eighth-note grid. A word's start is
espeak's WORD event in its utterance, its end the last non-silent sample. Words are sung one by one
because espeak voices some word pairs (e.g. "on the") as one unit with a single WORD event.

Two forms:
- **song** (the default): shaped like a pop song: an intro of 3-8 bars of band only, verses, a chorus
  sung 2-3 times with the same words and melody, an instrumental break of 6-12 bars, an outro. Songs
  vary in tempo, key, espeak voice, register (some low), vocal level against the band (0 dB down
  to -8 dB), word rate, held notes, rests and line lengths. Besides `lyrics.txt` (what is sung, with
  `[Chorus]` headers, blank lines and `(x2)` in some songs, as users paste lyrics) each song gets
  `lyrics_wrong.txt`: one line from another song added in the middle and one sung line left out,
  as truth.json records (`unsung_lines`, `absent_words`).
- **simple**: lines one after another, each on a bar after at least 2 s of band, one bar of intro.

    python -m bench.synth OUT_DIR --count N --seed S [--form song|simple] [--lines-file F]
        [--max-seconds S] [--lines MIN MAX] [--bpm B] [--voice V] [--format wav|flac] [--stems ...]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import butter, fftconvolve, sosfilt

from bench.espeak import Singer
from roar.audio import resample

SAMPLE_RATE = 44100
INSTRUMENT_STEMS = ("drums", "bass", "other")
STEMS = ("mixture", "vocals", "instrumental", *INSTRUMENT_STEMS)
FORMATS = {"wav": "WAV", "flac": "FLAC"}
FORMS = ("song", "simple")

# Plain, original lines of ordinary words for the command line's songs.
LYRIC_LINES = (
    "the morning light is on the hill",
    "we walk together down the road",
    "I keep your letter in my coat",
    "the river runs into the sea",
    "hold my hand and count to ten",
    "the city sleeps beneath the rain",
    "we talked until the lights went out",
    "a paper boat upon the lake",
    "tell me where the summer goes",
    "I found a feather on the stairs",
    "the radio is playing low",
    "we built a fire on the beach",
    "your voice is calling me back home",
    "the train is leaving after nine",
    "I wrote your name upon the wall",
    "the stars come out one by one",
    "we never said a last goodbye",
    "the garden waits for spring to come",
    "open the window let it in",
    "I hear the thunder far away",
    "the candle burns into the night",
    "we ran across the golden field",
    "my heart is beating like a drum",
    "the clock is ticking on the shelf",
    "come and sing this song with me",
    "the winter wind is cold and long",
    "I see the harbour from my room",
    "the birds are flying to the south",
    "we share the bread around the table",
    "the road is long but we are strong",
    "I dream of mountains white with snow",
    "the sun will rise again tomorrow",
    "we follow the river to the town",
    "the bells are ringing in the square",
    "I left my shadow by the door",
    "the ocean hums a quiet tune",
    "we turn the page and start again",
    "the moon is hiding in the clouds",
    "I will be waiting by the gate",
    "the lanterns glow along the street",
    "we laugh and talk until the dawn",
    "my brother plays a silver horn",
)
# Short hooks and long lines, so that line lengths vary from 2 to 12 words.
SHORT_LINES = (
    "hold on",
    "come back home",
    "never let go",
    "dance with me",
    "all night long",
    "here we are",
    "let it shine",
    "stay with me tonight",
    "sing it loud",
    "only you",
    "we are free",
    "into the light",
)
LONG_LINES = (
    "we drove all night across the empty plains until the morning came",
    "I remember every word you said to me beside the open door",
    "the children running through the meadow never heard the evening bell",
    "and if the rain keeps falling down we will dance until the sun comes out",
    "there is a light that shines for you across the water and the stones",
    "my mother told me long ago to follow every road that leads me home",
    "the sailors sing a song of places that they have never seen",
    "we counted every star above the roof and gave them all a name",
)

_SIMPLE_INTRO_BARS = 1
_TAIL_SECONDS = 0.4  # the last notes ring out, then fade
_SUSTAIN_WORDS_PER_MINUTE = 80  # espeak's slowest rate: a held note
# espeak's "en" voice at pitch 50 (range 0) sings about 89.6 Hz, MIDI 41.45, and 5 pitch units make
# a semitone (measured from 70 to 160 Hz); other voices are shifted but keep the scale.
_ESPEAK_PITCH_50_MIDI = 41.45
_ESPEAK_UNITS_PER_SEMITONE = 5.0
_VOCAL_MIDI_RANGE = (42, 52)
_LOW_VOCAL_MIDI_RANGE = (33, 43)  # a bass voice, espeak's lowest pitches

_MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
# Scale degrees (0 = I), one chord a bar: I–V–vi–IV, vi–IV–I–V, I–vi–IV–V, I–IV–vi–V.
_PROGRESSIONS = ((0, 4, 5, 3), (5, 3, 0, 4), (0, 5, 3, 4), (0, 3, 5, 4))
# Eighth notes of a bar on which an instrument plays.
_KICK_PATTERNS = ((0, 4), (0, 3, 4), (0, 4, 5), (0, 2, 4))
_BASS_PATTERNS = ((0, 3, 4, 6), (0, 2, 4, 6), (0, 4, 6, 7), (0, 1, 4, 5))
_CHORD_PATTERNS = ((0,), (0, 3, 6), (1, 3, 5, 7), (0, 4))

# RMS of each band stem where it plays; the vocals are set against the band (Voice.level_db).
_BAND_RMS = {"drums": 0.10, "bass": 0.08, "other": 0.05}
_MIX_PEAK = 0.89  # about -1 dBFS

# The song form's variety. Each run of 8 songs takes each (vocal level in dB against the band, low
# register, lyrics markup) once, in an order drawn from the seed: three songs at -5 dB or quieter,
# three low voices (one of them quiet), half with markup.
_PROFILES = (
    (0.0, False, True),
    (-1.0, True, False),
    (-2.0, False, False),
    (-3.0, False, True),
    (-4.0, True, True),
    (-5.0, False, False),
    (-6.0, True, True),
    (-8.0, False, False),
)
# espeak-ng voices and variants (`espeak-ng --voices=en`, variants in espeak-ng-data/voices/!v).
_VOICES = ("en", "en-us", "en+f3", "en+m3", "en-us+f2", "en-gb-scotland", "en-029", "en+f4", "en-gb-x-rp")
_LOW_VOICES = ("en", "en+m3", "en+m7", "en-us", "en-gb-scotland")
# --- music ---


def _hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


def _espeak_pitch(midi: int) -> int:
    return int(np.clip(round(50 + _ESPEAK_UNITS_PER_SEMITONE * (midi - _ESPEAK_PITCH_50_MIDI)), 0, 100))


def _chord_pitch_classes(key: int, degree: int) -> list[int]:
    return [(key + _MAJOR_SCALE[(degree + step) % 7]) % 12 for step in (0, 2, 4)]


def _in_range(pitch_classes: list[int], low: int, high: int) -> list[int]:
    """Every MIDI note in [low, high) with one of the pitch classes, ascending."""
    return [m for m in range(low, high) if m % 12 in pitch_classes]


def _pan(mono: np.ndarray, pan: float) -> np.ndarray:
    """Constant-power pan, -1 (left) to 1 (right), to (2, frames)."""
    angle = (pan + 1.0) * math.pi / 4.0
    return np.stack([mono * math.cos(angle), mono * math.sin(angle)])


def _lowpass(audio: np.ndarray, cutoff: float, order: int = 4) -> np.ndarray:
    return sosfilt(butter(order, cutoff, "lowpass", fs=SAMPLE_RATE, output="sos"), audio, axis=-1)


def _highpass(audio: np.ndarray, cutoff: float) -> np.ndarray:
    return sosfilt(butter(4, cutoff, "highpass", fs=SAMPLE_RATE, output="sos"), audio, axis=-1)


def _saw(freq: float, frames: int, phase: float = 0.0) -> np.ndarray:
    return 2.0 * ((freq * np.arange(frames) / SAMPLE_RATE + phase) % 1.0) - 1.0


def _envelope(frames: int, attack: float, decay: float, sustain: float, release: float) -> np.ndarray:
    """Attack, exponential decay to the sustain level, and a release over the last frames."""
    t = np.arange(frames) / SAMPLE_RATE
    env = sustain + (1.0 - sustain) * np.exp(-t / decay)
    env *= np.minimum(1.0, t / attack)
    release_frames = min(frames, int(release * SAMPLE_RATE))
    env[frames - release_frames :] *= np.linspace(1.0, 0.0, release_frames)
    return env


def _add(track: np.ndarray, sound: np.ndarray, at: int) -> None:
    """Mixes a (2, n) sound into a (2, frames) track from frame `at`, cut at the track's end."""
    n = min(sound.shape[-1], track.shape[-1] - at)
    if n > 0:
        track[:, at : at + n] += sound[:, :n]


@dataclass(frozen=True)
class _Grid:
    bpm: float

    @property
    def eighth(self) -> float:
        return 30.0 / self.bpm

    @property
    def bar(self) -> float:
        return 8 * self.eighth

    def frame(self, eighth: float) -> int:
        return round(eighth * self.eighth * SAMPLE_RATE)


def _kick() -> np.ndarray:
    t = np.arange(int(0.35 * SAMPLE_RATE)) / SAMPLE_RATE
    freq = 45.0 + 75.0 * np.exp(-t / 0.04)  # a falling sweep: the beater's thump
    return np.sin(2 * np.pi * np.cumsum(freq) / SAMPLE_RATE) * np.exp(-t / 0.12)


def _snare(rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(0.25 * SAMPLE_RATE)) / SAMPLE_RATE
    band = butter(2, (1000, 6000), "bandpass", fs=SAMPLE_RATE, output="sos")
    noise = sosfilt(band, rng.standard_normal(len(t)))
    body = 0.6 * np.sin(2 * np.pi * 185.0 * t) * np.exp(-t / 0.04)
    return 0.5 * noise * np.exp(-t / 0.07) + body


def _hat(rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(0.08 * SAMPLE_RATE)) / SAMPLE_RATE
    return 0.4 * _highpass(rng.standard_normal(len(t)), 7000.0) * np.exp(-t / 0.015)


def _drums(rng: np.random.Generator, grid: _Grid, bars: int, frames: int) -> np.ndarray:
    track = np.zeros((2, frames))
    kicks = _KICK_PATTERNS[rng.integers(len(_KICK_PATTERNS))]
    kick = _pan(_kick(), 0.0)
    for bar in range(bars):
        for eighth in range(8):
            at = grid.frame(bar * 8 + eighth)
            velocity = rng.uniform(0.85, 1.0)
            if eighth in kicks:
                _add(track, velocity * kick, at)
            if eighth in (2, 6):
                _add(track, velocity * _pan(_snare(rng), 0.1), at)
            accent = 1.0 if eighth % 2 == 0 else 0.6
            _add(track, accent * velocity * _pan(_hat(rng), 0.35), at)
    return track


def _bass(rng: np.random.Generator, grid: _Grid, bar_chords: list[list[int]], frames: int) -> np.ndarray:
    """The chord root, E1 to D#2, on the eighths of a pattern."""
    track = np.zeros((2, frames))
    pattern = (*_BASS_PATTERNS[rng.integers(len(_BASS_PATTERNS))], 8)
    for bar, chord in enumerate(bar_chords):
        root = _in_range(chord[:1], 28, 40)[0]
        for start, stop in itertools.pairwise(pattern):
            at, length = grid.frame(bar * 8 + start), grid.frame(stop - start) - grid.frame(0.1)
            note = _saw(_hz(root), length) * _envelope(length, 0.005, 0.15, 0.6, 0.02)
            _add(track, _pan(note, 0.0), at)
    return _lowpass(track, 500.0)


def _chords(rng: np.random.Generator, grid: _Grid, bar_chords: list[list[int]], frames: int) -> np.ndarray:
    """The triad, E3 to D#4, on the eighths of a pattern."""
    track = np.zeros((2, frames))
    pattern = (*_CHORD_PATTERNS[rng.integers(len(_CHORD_PATTERNS))], 8)
    for bar, chord in enumerate(bar_chords):
        notes = _in_range(chord, 52, 64)
        for start, stop in itertools.pairwise(pattern):
            at, length = grid.frame(bar * 8 + start), grid.frame(stop - start)
            envelope = _envelope(length, 0.015, 0.3, 0.7, 0.06)
            for note in notes:
                for cents, pan in ((-7.0, -0.4), (7.0, 0.4)):  # two detuned voices a note, spread wide
                    voice = _saw(_hz(note + cents / 100.0), length, phase=rng.random())
                    _add(track, _pan(0.3 * voice * envelope, pan), at)
    return _lowpass(track, 2200.0)


def _reverb(rng: np.random.Generator, mono: np.ndarray) -> np.ndarray:
    """A small room: decaying noise, different in each ear, after 20 ms, mixed under the dry voice."""
    t = np.arange(int(0.8 * SAMPLE_RATE)) / SAMPLE_RATE
    impulse = rng.standard_normal((2, len(t))) * np.exp(-t / 0.1)
    impulse[:, : int(0.02 * SAMPLE_RATE)] = 0.0
    impulse *= 0.25 / np.sqrt((impulse**2).sum(axis=1, keepdims=True))
    wet = _lowpass(np.stack([fftconvolve(mono, h)[: len(mono)] for h in impulse]), 5000.0)
    return _pan(mono, 0.0) + wet


# --- the song ---


@dataclass(frozen=True)
class Section:
    """A part of a song: sung `lines`, or `bars` of band only (an intro, a break, an outro). `name`
    is the header a lyrics sheet gives it ("Verse 1", "Chorus")."""

    name: str
    lines: tuple[str, ...] = ()
    bars: int = 0


@dataclass(frozen=True)
class Performance:
    """How the lyrics are sung."""

    voice: str = "en"  # an espeak-ng voice, with or without a variant ("en+f3")
    level_db: float = 1.0  # the vocals' RMS where sung, in dB against the band's RMS there
    low: bool = False  # a bass register (about A1-G2) instead of a baritone one (F#2-E3)
    words_per_minute: int = 140  # espeak's rate for each word
    pitch_range: int = 8  # espeak's intonation range, 0-100: small, so a word holds its note
    hold: float = 0.0  # the chance that a line's last word is held (sung at espeak's slowest rate)
    rest: float = 0.2  # the chance of an eighth's rest after a word inside a line
    min_gap: float = 2.0  # seconds of band at least between two lines


@dataclass
class _Sung:
    dry: np.ndarray  # the dry vocal, mono
    rate: int
    words: list[dict] = field(default_factory=list)  # {"word", "start", "end", "line"}
    lines: list[dict] = field(default_factory=list)  # {"text", "start", "end", "section"}
    bars: int = 0  # the song's length in bars


def _sing(
    rng: np.random.Generator,
    grid: _Grid,
    sections: Sequence[Section],
    key: int,
    progression: tuple[int, ...],
    how: Performance,
) -> _Sung:
    """Sings the lines on the grid: each line starts on a bar, at least `how.min_gap` s after the
    last, plus the bars of any band-only sections before it. A line sung again (a chorus) gets the
    melody, rests and held note it had the first time."""
    clips: list[tuple[int, np.ndarray]] = []  # (first sample, audio)
    low, high = _LOW_VOCAL_MIDI_RANGE if how.low else _VOCAL_MIDI_RANGE
    scale = _in_range([(key + step) % 12 for step in _MAJOR_SCALE], low, high)
    # line -> for each word (note, held, eighths it lasts, rest after it)
    melodies: dict[str, list[tuple[int, bool, int, bool]]] = {}
    sung = _Sung(np.zeros(0), 0)
    end: float | None = None
    band_bars = 0  # bars of band-only sections waiting before the next line
    note = int(rng.integers(len(scale)))
    with Singer() as singer:
        for section_index, section in enumerate(sections):
            band_bars += section.bars
            for text in section.lines:
                start_bar = (0 if end is None else math.ceil((end + how.min_gap) / grid.bar)) + band_bars
                band_bars = 0
                cursor = start_bar * 8  # in eighths
                line = text.split()
                melody = melodies.setdefault(text, [])
                for i, word in enumerate(line):
                    last = i == len(line) - 1
                    if len(melody) > i:
                        note, held, eighths, rest = melody[i]
                    else:
                        if last:  # end the phrase on a tone of the chord below it
                            chord = _chord_pitch_classes(key, progression[(cursor // 8) % len(progression)])
                            tones = [j for j, m in enumerate(scale) if m % 12 in chord]
                            note = min(tones, key=lambda j, previous=note: abs(j - previous))
                        else:
                            note = int(
                                np.clip(note + rng.choice((-2, -1, -1, 0, 1, 1, 2)), 0, len(scale) - 1)
                            )
                        held = last and rng.random() < how.hold
                        rest = not last and rng.random() < how.rest
                        eighths = 0  # known once sung
                    rate_wpm = _SUSTAIN_WORDS_PER_MINUTE if held else how.words_per_minute
                    voiced = singer.sing(
                        word, how.voice, _espeak_pitch(scale[note]), rate_wpm, how.pitch_range
                    )
                    sung.rate = voiced.sample_rate
                    onset = round(cursor * grid.eighth * sung.rate)
                    clips.append((onset - voiced.start, voiced.audio))
                    end = (onset - voiced.start + voiced.end) / sung.rate
                    sung.words.append(
                        {
                            "word": word,
                            "start": round(onset / sung.rate, 4),
                            "end": round(end, 4),
                            "line": len(sung.lines),
                        }
                    )
                    if len(melody) <= i:  # espeak's state can move a word by a few samples: keep its eighths
                        eighths = max(
                            1, math.ceil((len(voiced.audio) - voiced.start) / (grid.eighth * sung.rate))
                        )
                        melody.append((note, held, eighths, rest))
                    cursor += eighths + rest
                first = sung.words[-len(line)]
                sung.lines.append(
                    {"text": text, "start": first["start"], "end": round(end, 4), "section": section_index}
                )
    if end is None:
        raise ValueError("give at least one sung line")
    sung.bars = math.ceil((end + how.min_gap) / grid.bar) + band_bars
    sung.dry = np.zeros(max(at + len(audio) for at, audio in clips))
    for at, audio in clips:
        sung.dry[at : at + len(audio)] += audio
    return sung


def _vocals(rng: np.random.Generator, dry: np.ndarray, rate: int, frames: int) -> np.ndarray:
    mono = resample(dry, rate, SAMPLE_RATE)[:frames]
    return _reverb(rng, np.pad(mono, (0, frames - len(mono))))


def _rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(audio**2)))


def _write(path: Path, audio: np.ndarray, audio_format: str) -> None:
    sf.write(path, audio.T.astype(np.int16), SAMPLE_RATE, subtype="PCM_16", format=FORMATS[audio_format])


def lyrics_sheet(sections: Sequence[tuple[str, Sequence[str]]], markup: bool) -> str:
    """The lyrics as a user pastes them: plain, one line a line; or with markup: a `[Name]` header
    for each section, a blank line between sections, and a line sung twice or more in a row written
    once with `(x2)`, `(x3)`."""
    if not markup:
        return "\n".join(line for _, lines in sections for line in lines)
    blocks = []
    for name, lines in sections:
        rows = [f"[{name}]"]
        for line, run in itertools.groupby(lines):
            count = len(list(run))
            rows.append(f"{line} (x{count})" if count > 1 else line)
        blocks.append("\n".join(rows))
    return "\n\n".join(blocks)


def _sheet_sections(
    lines: Sequence[tuple[int, str]], sections: Sequence[Section]
) -> list[tuple[str, list[str]]]:
    """(section index, line) pairs, in order, grouped into (section name, lines)."""
    return [
        (sections[index].name, [text for _, text in group])
        for index, group in itertools.groupby(lines, key=lambda pair: pair[0])
    ]


def _wrong_lines(
    rng: np.random.Generator, sung: Sequence[tuple[int, str]], unsung_line: str
) -> tuple[list[tuple[int, str]], int]:
    """The sung (section, line) pairs with one left out (the last line a third of the time) and
    `unsung_line` put in the middle, in the section of the line before it; and the index of the
    line left out."""
    last = len(sung) - 1
    removed = last if rng.random() < 1 / 3 else int(rng.integers(len(sung)))
    lines = [pair for i, pair in enumerate(sung) if i != removed]
    low, high = max(1, len(lines) // 4), max(1, (3 * len(lines)) // 4)
    at = int(rng.integers(low, high + 1))
    lines.insert(at, (lines[at - 1][0] if lines else 0, unsung_line))
    return lines, removed


def render_song(
    out_dir: Path,
    sections: Sequence[Section],
    seed: int,
    bpm: float = 110.0,
    how: Performance = Performance(),
    stems: Sequence[str] = STEMS,
    audio_format: str = "wav",
    unsung_line: str | None = None,
    markup: bool = False,
) -> dict:
    """Writes a song to out_dir and returns its truth: the `stems` (mixture, vocals, instrumental =
    drums + bass + other, drums, bass, other = chords) as 44.1 kHz stereo 16-bit files of one length
    whose integer samples add up exactly (mixture = vocals + instrumental), lyrics.txt (with markup
    when `markup`), and truth.json:

        {"lyrics": the sung lines, one a line, "words": [{"word", "start", "end", "line"}],
         "lines": [{"text", "start", "end", "section"}], "sections": [{"name", "start", "end"}],
         "style": {"bpm", "key", and the Performance}, "markup": bool}

    in seconds of the mixture ("line" and "section" are indices). With an `unsung_line`, also
    lyrics_wrong.txt: the lyrics with `unsung_line` added in the middle and one sung line left out,
    and in truth.json "unsung_lines": [unsung_line], "absent_lines": [index of the line left out],
    "absent_words": [indices of its words]. The same arguments give the same bytes.
    """
    if not any(section.lines for section in sections):
        raise ValueError("give at least one sung line")
    if any(not line.split() for section in sections for line in section.lines):
        raise ValueError("give no empty lines")
    if audio_format not in FORMATS:
        raise ValueError(f"unknown audio format {audio_format!r}; use one of {', '.join(FORMATS)}")
    if unknown := set(stems) - set(STEMS):
        raise ValueError(f"unknown stems {sorted(unknown)}; choose from {', '.join(STEMS)}")
    sung_pairs = [(i, line) for i, section in enumerate(sections) for line in section.lines]
    if unsung_line is not None and unsung_line in {line for _, line in sung_pairs}:
        raise ValueError("the unsung line must be one that the song does not sing")
    rng = np.random.default_rng(seed)
    grid = _Grid(bpm)
    key = int(rng.integers(12))
    progression = _PROGRESSIONS[rng.integers(len(_PROGRESSIONS))]

    sung = _sing(rng, grid, sections, key, progression, how)
    frames = grid.frame(sung.bars * 8) + int(_TAIL_SECONDS * SAMPLE_RATE)
    bar_chords = [_chord_pitch_classes(key, progression[bar % len(progression)]) for bar in range(sung.bars)]
    tracks = {
        "vocals": _vocals(rng, sung.dry, sung.rate, frames),
        "drums": _drums(rng, grid, sung.bars, frames),
        "bass": _bass(rng, grid, bar_chords, frames),
        "other": _chords(rng, grid, bar_chords, frames),
    }
    singing = np.zeros(frames, dtype=bool)
    for word in sung.words:
        singing[round(word["start"] * SAMPLE_RATE) : round(word["end"] * SAMPLE_RATE)] = True
    fade = np.ones(frames)
    fade[-int(_TAIL_SECONDS * SAMPLE_RATE) :] = np.linspace(1.0, 0.0, int(_TAIL_SECONDS * SAMPLE_RATE))
    for name in INSTRUMENT_STEMS:
        tracks[name] *= fade * _BAND_RMS[name] / _rms(tracks[name])
    band = sum(tracks[name] for name in INSTRUMENT_STEMS)
    vocal_rms = _rms(band[:, singing]) * 10.0 ** (how.level_db / 20.0)
    tracks["vocals"] *= fade * vocal_rms / _rms(tracks["vocals"][:, singing])
    peak = max(np.abs(audio).max() for audio in (tracks["vocals"] + band, band, *tracks.values()))
    scale = _MIX_PEAK / peak * 32767  # so that no written file clips
    # Integer stems first, so that the written stems add up exactly to the written mixture.
    ints = {name: np.round(track * scale).astype(np.int32) for name, track in tracks.items()}
    instrumental = sum(ints[name] for name in INSTRUMENT_STEMS)
    mixture = ints["vocals"] + instrumental

    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = {"mixture": mixture, "instrumental": instrumental, **ints}
    for name in stems:
        _write(out_dir / f"{name}.{audio_format}", outputs[name], audio_format)
    song_end = round(frames / SAMPLE_RATE, 4)
    truth = {
        "lyrics": "\n".join(line for _, line in sung_pairs),
        "words": sung.words,
        "lines": sung.lines,
        "sections": _section_times(sections, sung.lines, song_end),
        "style": {"bpm": bpm, "key": key, **asdict(how)},
        "markup": markup,
    }
    (out_dir / "lyrics.txt").write_text(lyrics_sheet(_sheet_sections(sung_pairs, sections), markup) + "\n")
    if unsung_line is not None:
        wrong, removed = _wrong_lines(rng, sung_pairs, unsung_line)
        (out_dir / "lyrics_wrong.txt").write_text(
            lyrics_sheet(_sheet_sections(wrong, sections), markup) + "\n"
        )
        truth["unsung_lines"] = [unsung_line]
        truth["absent_lines"] = [removed]
        truth["absent_words"] = [i for i, word in enumerate(sung.words) if word["line"] == removed]
    (out_dir / "truth.json").write_text(json.dumps(truth, indent=2) + "\n")
    return truth


def _section_times(sections: Sequence[Section], lines: Sequence[dict], song_end: float) -> list[dict]:
    """Each section's span: a sung one from its first word to its last; a band-only one from the end
    of the singing before it (or 0) to the start of the singing after it (or the song's end)."""
    spans = []
    for index, section in enumerate(sections):
        own = [line for line in lines if line["section"] == index]
        if own:
            start, end = own[0]["start"], own[-1]["end"]
        else:
            start = max((line["end"] for line in lines if line["section"] < index), default=0.0)
            end = min((line["start"] for line in lines if line["section"] > index), default=song_end)
        spans.append({"name": section.name, "start": start, "end": end})
    return spans


def make_song(
    out_dir: Path,
    lyrics_lines: list[str],
    seed: int,
    bpm: float = 110.0,
    voice: str = "en",
    min_gap: float = 2.0,
    stems: Sequence[str] = STEMS,
    audio_format: str = "wav",
) -> dict:
    """The simple form: one bar of band, then the lines one after another, each on a bar at least
    `min_gap` s after the last (see render_song for the files and the truth returned)."""
    sections = (Section("Intro", bars=_SIMPLE_INTRO_BARS), Section("Verse", tuple(lyrics_lines)))
    return render_song(
        out_dir, sections, seed, bpm, Performance(voice=voice, min_gap=min_gap), stems, audio_format
    )


# --- song plans for the command line ---


@dataclass(frozen=True)
class LinePool:
    """Lyric lines to draw from, by length in words."""

    short: tuple[str, ...]  # up to 4 words: hooks
    medium: tuple[str, ...]
    long: tuple[str, ...]  # 9 words or more

    @classmethod
    def of(cls, lines: Sequence[str]) -> LinePool:
        def lengths(low: int, high: int) -> tuple[str, ...]:
            return tuple(line for line in lines if low <= len(line.split()) <= high)

        return cls(lengths(1, 4), lengths(5, 8), lengths(9, 1000))

    @property
    def all(self) -> tuple[str, ...]:
        return self.short + self.medium + self.long


@dataclass(frozen=True)
class SongPlan:
    sections: tuple[Section, ...]
    bpm: float
    how: Performance
    unsung_line: str
    markup: bool

    def estimated_seconds(self) -> float:
        """About how long the song will be: a word takes some eighths, a line ends on a bar."""
        grid = _Grid(self.bpm)
        word_eighths = math.ceil(70.0 / self.how.words_per_minute / grid.eighth) + self.how.rest
        bars = sum(section.bars for section in self.sections)
        for section in self.sections:
            for line in section.lines:
                seconds = len(line.split()) * word_eighths * grid.eighth + self.how.hold + self.how.min_gap
                bars += math.ceil(seconds / grid.bar)
        return bars * grid.bar


def _draw(rng: np.random.Generator, lines: Sequence[str], count: int, used: set[str]) -> list[str]:
    """`count` lines not used yet (fewer when the pool runs out)."""
    free = [line for line in lines if line not in used]
    chosen = [free[i] for i in rng.choice(len(free), size=min(count, len(free)), replace=False)]
    used.update(chosen)
    return chosen


def plan_song(
    rng: np.random.Generator,
    pool: LinePool,
    profile: tuple[float, bool, bool],
    max_seconds: float = 120.0,
    voice: str | None = None,
    bpm: float | None = None,
) -> SongPlan:
    """A song-shaped plan: intro (3-8 bars), verse, chorus, verse, chorus, break (6-12 bars), chorus
    (or with two choruses: intro, verse, chorus, break, verse, chorus), outro. Verses have 2-4 lines
    (one may be long); a chorus has 1-2 lines and a short hook, which may be sung twice in a row.
    Shortened to about `max_seconds` (fewer verse lines, then two choruses). `profile`: (vocal level in
    dB, low register, lyrics markup)."""
    level_db, low, markup = profile
    how = Performance(
        voice=voice or str(rng.choice(_LOW_VOICES if low else _VOICES)),
        level_db=level_db,
        low=low,
        words_per_minute=int(rng.integers(110, 171)),
        pitch_range=int(rng.integers(4, 15)),
        hold=round(float(rng.uniform(0.0, 0.7)), 2),
        rest=round(float(rng.uniform(0.05, 0.35)), 2),
        min_gap=round(float(rng.uniform(0.6, 2.0)), 2),
    )
    used: set[str] = set()
    medium = pool.medium or pool.all
    hook = _draw(rng, pool.short or pool.all, 1, used)
    chorus = _draw(rng, medium, int(rng.integers(1, 3)), used)
    chorus = chorus + hook * int(rng.integers(1, 3))  # the hook once, or twice in a row: "(x2)"
    verses = []
    for _ in range(2):
        verse = _draw(rng, medium, int(rng.integers(2, 5)), used)
        if pool.long and rng.random() < 0.5:
            verse.insert(int(rng.integers(len(verse) + 1)), *_draw(rng, pool.long, 1, used))
        verses.append(verse)
    intro, break_bars, outro = int(rng.integers(3, 9)), int(rng.integers(6, 13)), int(rng.integers(2, 5))
    three_choruses = bool(rng.random() < 0.5)
    unsung_line = _draw(rng, pool.all, 1, used)[0]
    tempo = bpm or round(float(rng.uniform(84.0, 150.0)), 1)

    def sections(verse_lines: list[list[str]]) -> tuple[Section, ...]:
        first, second = (Section(f"Verse {n}", tuple(lines)) for n, lines in enumerate(verse_lines, 1))
        sung_chorus = Section("Chorus", tuple(chorus))
        band = Section("Break", bars=break_bars)
        middle = (first, sung_chorus, second, sung_chorus, band, sung_chorus)
        if not three_choruses:
            middle = (first, sung_chorus, band, second, sung_chorus)
        return (Section("Intro", bars=intro), *middle, Section("Outro", bars=outro))

    plan = SongPlan(sections(verses), tempo, how, unsung_line, markup)
    # Too long: drop verse lines down to two a verse, then the second verse's to one, then the third
    # chorus, then the first verse's lines to one.
    for verse, fewest in ((None, 2), (1, 1), (0, 1)):
        while plan.estimated_seconds() > max_seconds:
            candidates = verses if verse is None else [verses[verse]]
            longest = max(candidates, key=len)
            if len(longest) <= fewest:
                break
            longest.pop()
            plan = replace(plan, sections=sections(verses))
        if verse == 1 and plan.estimated_seconds() > max_seconds and three_choruses:
            three_choruses = False
            plan = replace(plan, sections=sections(verses))
    return plan


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.synth", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="songs are written to OUT_DIR/song_000, song_001, ...")
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--form", choices=FORMS, default="song", help="song-shaped (default) or simple")
    parser.add_argument("--lines-file", type=Path, help="lyric lines to draw from, one a line")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="song form: about this long at most")
    parser.add_argument(
        "--lines", type=int, nargs=2, default=(4, 8), metavar=("MIN", "MAX"), help="simple form: lines a song"
    )
    parser.add_argument("--bpm", type=float, help="one tempo for all songs (default: drawn)")
    parser.add_argument("--voice", help="one espeak-ng voice for all songs (default: drawn; simple form: en)")
    parser.add_argument("--format", choices=sorted(FORMATS), default="wav")
    parser.add_argument("--stems", nargs="+", choices=STEMS, default=STEMS, help="audio files to write")
    args = parser.parse_args(argv)
    lines = (
        [line.strip() for line in args.lines_file.read_text().splitlines() if line.strip()]
        if args.lines_file
        else [*LYRIC_LINES, *SHORT_LINES, *LONG_LINES]
        if args.form == "song"
        else list(LYRIC_LINES)
    )
    rng = np.random.default_rng(args.seed)
    profiles = rng.permutation(len(_PROFILES))
    for index in range(args.count):
        out_dir = args.out_dir / f"song_{index:03d}"
        if args.form == "simple":
            _make_simple(rng, out_dir, lines, args)
        else:
            plan = plan_song(
                rng,
                LinePool.of(lines),
                _PROFILES[profiles[index % len(_PROFILES)]],
                args.max_seconds,
                args.voice,
                args.bpm,
            )
            render_song(
                out_dir,
                plan.sections,
                seed=int(rng.integers(2**31)),
                bpm=plan.bpm,
                how=plan.how,
                stems=args.stems,
                audio_format=args.format,
                unsung_line=plan.unsung_line,
                markup=plan.markup,
            )
        print(out_dir)


def _bpm_range(line_count: int) -> tuple[float, float]:
    """Simple form: tempi that keep a song of this many lines within about 30-60 s."""
    return 36.0 + 12.0 * line_count, 60.0 + 11.0 * line_count


def _make_simple(
    rng: np.random.Generator, out_dir: Path, pool: Sequence[str], args: argparse.Namespace
) -> None:
    line_count = int(rng.integers(args.lines[0], args.lines[1] + 1))
    chosen = rng.choice(len(pool), size=min(line_count, len(pool)), replace=False)
    bpm = round(float(rng.uniform(*_bpm_range(line_count))), 1)
    make_song(
        out_dir,
        [pool[i] for i in chosen],
        seed=int(rng.integers(2**31)),
        bpm=args.bpm or bpm,
        voice=args.voice or "en",
        stems=args.stems,
        audio_format=args.format,
    )


if __name__ == "__main__":
    main()
