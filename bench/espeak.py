"""espeak-ng singing single words through its C API (speak_lib.h), with the word's position.

The espeak-ng command line tool reports no word positions; the library's synth callback does (WORD
events). The library keeps state between utterances (pitch flutter, gain control), so a word sung
later in a process can come out a few samples different: a Singer runs a fresh engine in a process
of its own, so that the same words sung by a new Singer come out the same. Scripts that use a Singer
need the usual `if __name__ == "__main__":` guard of multiprocessing's spawn.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_PARAMETER_RATE, _PARAMETER_PITCH, _PARAMETER_RANGE = 1, 3, 4
_EE_OK = 0


class _Event(ctypes.Structure):
    _fields_ = (
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms
        ("sample", ctypes.c_int),  # the same position in samples
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_void_p),  # a union of int, const char * and char[8]
    )


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass(frozen=True)
class SungWord:
    audio: np.ndarray  # float32 mono
    sample_rate: int
    start: int  # sample where espeak starts the word (its WORD event)
    end: int  # one past the last sample above -40 dB of the word's peak


@functools.cache
def library() -> ctypes.CDLL:
    try:
        return ctypes.CDLL(ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1")
    except OSError as exc:
        raise RuntimeError(
            "libespeak-ng is not installed (Debian: apt-get install espeak-ng libespeak-ng1)"
        ) from exc


class _Engine:
    """The library's one synthesiser (its state is global to the process)."""

    def __init__(self) -> None:
        self._lib = library()
        self.sample_rate: int = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, 0)
        if self.sample_rate <= 0:
            raise RuntimeError("libespeak-ng could not start: is espeak-ng-data installed?")
        self._voice = ""
        self._chunks: list[np.ndarray] = []
        self._word_starts: list[int] = []
        self._callback = _SynthCallback(self._collect)  # kept referenced while espeak holds it
        self._lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, samples, count: int, events) -> int:
        if samples and count > 0:
            self._chunks.append(np.ctypeslib.as_array(samples, (count,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            if events[i].type == _EVENT_WORD:
                self._word_starts.append(events[i].sample)
            i += 1
        return 0  # go on

    def sing(self, word: str, voice: str, pitch: int, words_per_minute: int, pitch_range: int) -> SungWord:
        if voice != self._voice:
            if self._lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
                raise ValueError(f"espeak-ng has no voice {voice!r} (list them: espeak-ng --voices)")
            self._voice = voice
        for parameter, value in (
            (_PARAMETER_RATE, words_per_minute),
            (_PARAMETER_PITCH, pitch),
            (_PARAMETER_RANGE, pitch_range),
        ):
            self._lib.espeak_SetParameter(parameter, value, 0)
        self._chunks.clear()
        self._word_starts.clear()
        text = word.encode()
        error = self._lib.espeak_Synth(text, len(text) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        self._lib.espeak_Synchronize()
        if error != _EE_OK or not self._chunks or not self._word_starts:
            raise ValueError(f"espeak-ng sang nothing for {word!r}")
        audio = np.concatenate(self._chunks).astype(np.float32) / 32768.0
        loud = np.flatnonzero(np.abs(audio) > 0.01 * np.abs(audio).max())
        return SungWord(audio, self.sample_rate, self._word_starts[0], int(loud[-1]) + 1)


@functools.cache
def _engine() -> _Engine:
    return _Engine()


def _sing(word: str, voice: str, pitch: int, words_per_minute: int, pitch_range: int) -> SungWord:
    return _engine().sing(word, voice, pitch, words_per_minute, pitch_range)


class Singer:
    """A fresh espeak-ng in a child process, for one song: `with Singer() as singer: singer.sing(...)`."""

    def __enter__(self) -> Singer:
        self._process = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._process.shutdown()

    def sing(self, word: str, voice: str, pitch: int, words_per_minute: int, pitch_range: int) -> SungWord:
        """One word as an utterance. pitch and pitch_range: espeak's 0-100 scales (50 is the voice's
        usual pitch); voice: an espeak-ng voice name ("en", "en-us", "en+f3", ...)."""
        return self._process.submit(_sing, word, voice, pitch, words_per_minute, pitch_range).result()
