"""Synthetic songs with known stems and word timings, for evaluating separation and lyric alignment.

A song is drums, a bass line and chords on a beat grid, one chord a bar of a pop progression
(I–V–vi–IV and relatives) in a random major key, with espeak-ng singing the lyrics: one espeak
utterance per word at the pitch of a melody note, on the eighth-note grid. Each line starts on a bar
and is followed by at least `min_gap` seconds of band only, as in real songs. A word's start is
espeak's WORD event in its utterance, its end the last non-silent sample. Words are sung one by one
because espeak voices some word pairs (e.g. "on the") as one unit with a single WORD event.

    python -m bench.synth OUT_DIR --count N --seed S [--lines-file F]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
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

_INTRO_BARS = 1
_TAIL_SECONDS = 0.4  # the last notes ring out, then fade
_WORDS_PER_MINUTE = 140
_PITCH_RANGE = 8  # espeak's intonation range, 0-100: small, so a word holds its note
# espeak's "en" voice at pitch 50 (range 0) sings about 89.6 Hz, MIDI 41.45, and 5 pitch units make
# a semitone (measured from 70 to 160 Hz); other voices are shifted but keep the scale.
_ESPEAK_PITCH_50_MIDI = 41.45
_ESPEAK_UNITS_PER_SEMITONE = 5.0
_VOCAL_MIDI_RANGE = (42, 52)

_MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
# Scale degrees (0 = I), one chord a bar: I–V–vi–IV, vi–IV–I–V, I–vi–IV–V, I–IV–vi–V.
_PROGRESSIONS = ((0, 4, 5, 3), (5, 3, 0, 4), (0, 5, 3, 4), (0, 3, 5, 4))
# Eighth notes of a bar on which an instrument plays.
_KICK_PATTERNS = ((0, 4), (0, 3, 4), (0, 4, 5), (0, 2, 4))
_BASS_PATTERNS = ((0, 3, 4, 6), (0, 2, 4, 6), (0, 4, 6, 7), (0, 1, 4, 5))
_CHORD_PATTERNS = ((0,), (0, 3, 6), (1, 3, 5, 7), (0, 4))

# Levels: RMS of each stem where it plays; the vocals sit a little above the band.
_STEM_RMS = {"vocals": 0.16, "drums": 0.10, "bass": 0.08, "other": 0.05}
_MIX_PEAK = 0.89  # about -1 dBFS


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


def _sing(
    rng: np.random.Generator,
    grid: _Grid,
    lines: list[list[str]],
    key: int,
    progression: tuple[int, ...],
    voice: str,
    min_gap: float,
) -> tuple[np.ndarray, int, list[dict], int]:
    """Sings the words on the grid: the dry vocal and its sample rate, the truth words, and the
    number of bars the song needs."""
    clips: list[tuple[int, np.ndarray]] = []  # (first sample, audio)
    words: list[dict] = []
    scale = _in_range([(key + step) % 12 for step in _MAJOR_SCALE], *_VOCAL_MIDI_RANGE)
    line_start = _INTRO_BARS * 8  # in eighths
    note = int(rng.integers(len(scale)))
    end = 0.0
    with Singer() as singer:
        for line in lines:
            cursor = line_start
            for i, word in enumerate(line):
                if i == len(line) - 1:  # end the phrase on a tone of the chord below it
                    chord = _chord_pitch_classes(key, progression[(cursor // 8) % len(progression)])
                    tones = [j for j, m in enumerate(scale) if m % 12 in chord]
                    note = min(tones, key=lambda j, previous=note: abs(j - previous))
                else:
                    note = int(np.clip(note + rng.choice((-2, -1, -1, 0, 1, 1, 2)), 0, len(scale) - 1))
                sung = singer.sing(word, voice, _espeak_pitch(scale[note]), _WORDS_PER_MINUTE, _PITCH_RANGE)
                rate = sung.sample_rate
                onset = round(cursor * grid.eighth * rate)
                clips.append((onset - sung.start, sung.audio))
                end = (onset - sung.start + sung.end) / rate
                words.append({"word": word, "start": round(onset / rate, 4), "end": round(end, 4)})
                eighths = max(1, math.ceil((len(sung.audio) - sung.start) / (grid.eighth * rate)))
                rest = 1 if i < len(line) - 1 and rng.random() < 0.2 else 0
                cursor += eighths + rest
            line_start = math.ceil((end + min_gap) / grid.bar) * 8
    dry = np.zeros(max(at + len(audio) for at, audio in clips))
    for at, audio in clips:
        dry[at : at + len(audio)] += audio
    return dry, rate, words, line_start // 8


def _vocals(rng: np.random.Generator, dry: np.ndarray, rate: int, frames: int) -> np.ndarray:
    mono = resample(dry, rate, SAMPLE_RATE)[:frames]
    return _reverb(rng, np.pad(mono, (0, frames - len(mono))))


def _rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(audio**2)))


def _write(path: Path, audio: np.ndarray, audio_format: str) -> None:
    sf.write(path, audio.T.astype(np.int16), SAMPLE_RATE, subtype="PCM_16", format=FORMATS[audio_format])


def make_song(
    out_dir: Path,
    lyrics_lines: list[str],
    seed: int,
    bpm: float = 110.0,
    voice: str = "en",
    min_gap: float = 2.0,
    stems: Sequence[str] = STEMS,
    audio_format: str = "wav",
) -> None:
    """Writes a song to out_dir: the `stems` (mixture, vocals, instrumental = drums + bass + other,
    drums, bass, other = chords) as 44.1 kHz stereo 16-bit files of one length whose integer samples
    add up exactly (mixture = vocals + instrumental), truth.json ({"lyrics", "words": [{"word",
    "start", "end"}], "lines": [{"text", "start", "end"}]}, seconds in the mixture) and lyrics.txt.
    The same arguments give the same bytes.

    Lines are split into words at whitespace; `voice` is an espeak-ng voice name; `audio_format`
    is "wav" or "flac".
    """
    lines = [line.split() for line in lyrics_lines]
    if not lines or not all(lines):
        raise ValueError("give at least one line, and no empty lines")
    if audio_format not in FORMATS:
        raise ValueError(f"unknown audio format {audio_format!r}; use one of {', '.join(FORMATS)}")
    if unknown := set(stems) - set(STEMS):
        raise ValueError(f"unknown stems {sorted(unknown)}; choose from {', '.join(STEMS)}")
    rng = np.random.default_rng(seed)
    grid = _Grid(bpm)
    key = int(rng.integers(12))
    progression = _PROGRESSIONS[rng.integers(len(_PROGRESSIONS))]

    dry_vocal, vocal_rate, words, bars = _sing(rng, grid, lines, key, progression, voice, min_gap)
    frames = grid.frame(bars * 8) + int(_TAIL_SECONDS * SAMPLE_RATE)
    bar_chords = [_chord_pitch_classes(key, progression[bar % len(progression)]) for bar in range(bars)]
    tracks = {
        "vocals": _vocals(rng, dry_vocal, vocal_rate, frames),
        "drums": _drums(rng, grid, bars, frames),
        "bass": _bass(rng, grid, bar_chords, frames),
        "other": _chords(rng, grid, bar_chords, frames),
    }
    sung = np.zeros(frames, dtype=bool)
    for word in words:
        sung[round(word["start"] * SAMPLE_RATE) : round(word["end"] * SAMPLE_RATE)] = True
    fade = np.ones(frames)
    fade[-int(_TAIL_SECONDS * SAMPLE_RATE) :] = np.linspace(1.0, 0.0, int(_TAIL_SECONDS * SAMPLE_RATE))
    for name, track in tracks.items():
        playing = track[:, sung] if name == "vocals" else track
        track *= fade * _STEM_RMS[name] / _rms(playing)
    band = sum(tracks[name] for name in INSTRUMENT_STEMS)
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
    line_words, first = [], 0
    for line in lines:
        line_words.append(words[first : first + len(line)])
        first += len(line)
    truth = {
        "lyrics": "\n".join(" ".join(line) for line in lines),
        "words": words,
        "lines": [
            {"text": " ".join(line), "start": ws[0]["start"], "end": ws[-1]["end"]}
            for line, ws in zip(lines, line_words, strict=True)
        ],
    }
    (out_dir / "truth.json").write_text(json.dumps(truth, indent=2) + "\n")
    (out_dir / "lyrics.txt").write_text(truth["lyrics"] + "\n")


def _bpm_range(line_count: int) -> tuple[float, float]:
    """Tempi that keep a song of this many lines within about 30-60 s (faster for more lines)."""
    return 36.0 + 12.0 * line_count, 60.0 + 11.0 * line_count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.synth", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="songs are written to OUT_DIR/song_000, song_001, ...")
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lines-file", type=Path, help="lyric lines to draw from, one a line")
    parser.add_argument("--lines", type=int, nargs=2, default=(4, 8), metavar=("MIN", "MAX"))
    parser.add_argument("--bpm", type=float, help="one tempo for all songs (default: drawn to fit 30-60 s)")
    parser.add_argument("--voice", default="en", help="espeak-ng voice")
    parser.add_argument("--format", choices=sorted(FORMATS), default="wav")
    parser.add_argument("--stems", nargs="+", choices=STEMS, default=STEMS, help="audio files to write")
    args = parser.parse_args(argv)
    pool = (
        [line.strip() for line in args.lines_file.read_text().splitlines() if line.strip()]
        if args.lines_file
        else list(LYRIC_LINES)
    )
    rng = np.random.default_rng(args.seed)
    for index in range(args.count):
        line_count = int(rng.integers(args.lines[0], args.lines[1] + 1))
        chosen = rng.choice(len(pool), size=min(line_count, len(pool)), replace=False)
        bpm = round(float(rng.uniform(*_bpm_range(line_count))), 1)
        out_dir = args.out_dir / f"song_{index:03d}"
        make_song(
            out_dir,
            [pool[i] for i in chosen],
            seed=int(rng.integers(2**31)),
            bpm=args.bpm or bpm,
            voice=args.voice,
            stems=args.stems,
            audio_format=args.format,
        )
        print(out_dir)


if __name__ == "__main__":
    main()
