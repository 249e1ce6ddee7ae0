from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AudioFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIO_FORMAT_UNSPECIFIED: _ClassVar[AudioFormat]
    AUDIO_FORMAT_WAV: _ClassVar[AudioFormat]
    AUDIO_FORMAT_FLAC: _ClassVar[AudioFormat]
    AUDIO_FORMAT_MP3: _ClassVar[AudioFormat]

class LyricsFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LYRICS_FORMAT_UNSPECIFIED: _ClassVar[LyricsFormat]
    LYRICS_FORMAT_LRC: _ClassVar[LyricsFormat]
    LYRICS_FORMAT_ENHANCED_LRC: _ClassVar[LyricsFormat]
    LYRICS_FORMAT_ASS: _ClassVar[LyricsFormat]
    LYRICS_FORMAT_VTT: _ClassVar[LyricsFormat]
    LYRICS_FORMAT_JSON: _ClassVar[LyricsFormat]
AUDIO_FORMAT_UNSPECIFIED: AudioFormat
AUDIO_FORMAT_WAV: AudioFormat
AUDIO_FORMAT_FLAC: AudioFormat
AUDIO_FORMAT_MP3: AudioFormat
LYRICS_FORMAT_UNSPECIFIED: LyricsFormat
LYRICS_FORMAT_LRC: LyricsFormat
LYRICS_FORMAT_ENHANCED_LRC: LyricsFormat
LYRICS_FORMAT_ASS: LyricsFormat
LYRICS_FORMAT_VTT: LyricsFormat
LYRICS_FORMAT_JSON: LyricsFormat

class StageProgress(_message.Message):
    __slots__ = ("percent", "message", "eta_seconds")
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    percent: float
    message: str
    eta_seconds: float
    def __init__(self, percent: _Optional[float] = ..., message: _Optional[str] = ..., eta_seconds: _Optional[float] = ...) -> None: ...

class FileChunk(_message.Message):
    __slots__ = ("name", "data", "eof")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    EOF_FIELD_NUMBER: _ClassVar[int]
    name: str
    data: bytes
    eof: bool
    def __init__(self, name: _Optional[str] = ..., data: _Optional[bytes] = ..., eof: _Optional[bool] = ...) -> None: ...

class Word(_message.Message):
    __slots__ = ("text", "start", "end", "confidence", "heard", "from_transcript")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    HEARD_FIELD_NUMBER: _ClassVar[int]
    FROM_TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    text: str
    start: float
    end: float
    confidence: float
    heard: bool
    from_transcript: bool
    def __init__(self, text: _Optional[str] = ..., start: _Optional[float] = ..., end: _Optional[float] = ..., confidence: _Optional[float] = ..., heard: _Optional[bool] = ..., from_transcript: _Optional[bool] = ...) -> None: ...

class Segment(_message.Message):
    __slots__ = ("text", "start", "end", "words", "not_sung")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    NOT_SUNG_FIELD_NUMBER: _ClassVar[int]
    text: str
    start: float
    end: float
    words: _containers.RepeatedCompositeFieldContainer[Word]
    not_sung: bool
    def __init__(self, text: _Optional[str] = ..., start: _Optional[float] = ..., end: _Optional[float] = ..., words: _Optional[_Iterable[_Union[Word, _Mapping]]] = ..., not_sung: _Optional[bool] = ...) -> None: ...

class Transcript(_message.Message):
    __slots__ = ("language", "segments", "model", "from_user_lyrics")
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FROM_USER_LYRICS_FIELD_NUMBER: _ClassVar[int]
    language: str
    segments: _containers.RepeatedCompositeFieldContainer[Segment]
    model: str
    from_user_lyrics: bool
    def __init__(self, language: _Optional[str] = ..., segments: _Optional[_Iterable[_Union[Segment, _Mapping]]] = ..., model: _Optional[str] = ..., from_user_lyrics: _Optional[bool] = ...) -> None: ...

class AudioInfo(_message.Message):
    __slots__ = ("duration_seconds", "sample_rate", "channels", "format")
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    duration_seconds: float
    sample_rate: int
    channels: int
    format: str
    def __init__(self, duration_seconds: _Optional[float] = ..., sample_rate: _Optional[int] = ..., channels: _Optional[int] = ..., format: _Optional[str] = ...) -> None: ...
