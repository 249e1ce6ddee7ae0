from roar.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TranscriptionOptions(_message.Message):
    __slots__ = ("model", "language", "lyrics", "pcm", "done")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    LYRICS_FIELD_NUMBER: _ClassVar[int]
    PCM_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    model: str
    language: str
    lyrics: str
    pcm: PcmLayout
    done: _containers.RepeatedCompositeFieldContainer[Passage]
    def __init__(self, model: _Optional[str] = ..., language: _Optional[str] = ..., lyrics: _Optional[str] = ..., pcm: _Optional[_Union[PcmLayout, _Mapping]] = ..., done: _Optional[_Iterable[_Union[Passage, _Mapping]]] = ...) -> None: ...

class PcmLayout(_message.Message):
    __slots__ = ("sample_rate", "channels")
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    sample_rate: int
    channels: int
    def __init__(self, sample_rate: _Optional[int] = ..., channels: _Optional[int] = ...) -> None: ...

class Passage(_message.Message):
    __slots__ = ("index", "start", "end", "words", "state")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    index: int
    start: float
    end: float
    words: _containers.RepeatedCompositeFieldContainer[_common_pb2.Word]
    state: bytes
    def __init__(self, index: _Optional[int] = ..., start: _Optional[float] = ..., end: _Optional[float] = ..., words: _Optional[_Iterable[_Union[_common_pb2.Word, _Mapping]]] = ..., state: _Optional[bytes] = ...) -> None: ...

class TranscribeRequest(_message.Message):
    __slots__ = ("options", "audio")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    options: TranscriptionOptions
    audio: bytes
    def __init__(self, options: _Optional[_Union[TranscriptionOptions, _Mapping]] = ..., audio: _Optional[bytes] = ...) -> None: ...

class TranscribeResponse(_message.Message):
    __slots__ = ("progress", "transcript", "passage")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    PASSAGE_FIELD_NUMBER: _ClassVar[int]
    progress: _common_pb2.StageProgress
    transcript: _common_pb2.Transcript
    passage: Passage
    def __init__(self, progress: _Optional[_Union[_common_pb2.StageProgress, _Mapping]] = ..., transcript: _Optional[_Union[_common_pb2.Transcript, _Mapping]] = ..., passage: _Optional[_Union[Passage, _Mapping]] = ...) -> None: ...
