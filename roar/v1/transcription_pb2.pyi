from roar.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TranscriptionOptions(_message.Message):
    __slots__ = ("model", "language", "lyrics")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    LYRICS_FIELD_NUMBER: _ClassVar[int]
    model: str
    language: str
    lyrics: str
    def __init__(self, model: _Optional[str] = ..., language: _Optional[str] = ..., lyrics: _Optional[str] = ...) -> None: ...

class TranscribeRequest(_message.Message):
    __slots__ = ("options", "audio")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    options: TranscriptionOptions
    audio: bytes
    def __init__(self, options: _Optional[_Union[TranscriptionOptions, _Mapping]] = ..., audio: _Optional[bytes] = ...) -> None: ...

class TranscribeResponse(_message.Message):
    __slots__ = ("progress", "transcript")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    progress: _common_pb2.StageProgress
    transcript: _common_pb2.Transcript
    def __init__(self, progress: _Optional[_Union[_common_pb2.StageProgress, _Mapping]] = ..., transcript: _Optional[_Union[_common_pb2.Transcript, _Mapping]] = ...) -> None: ...
