from roar.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SeparationOptions(_message.Message):
    __slots__ = ("model", "all_stems", "format")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ALL_STEMS_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    model: str
    all_stems: bool
    format: _common_pb2.AudioFormat
    def __init__(self, model: _Optional[str] = ..., all_stems: _Optional[bool] = ..., format: _Optional[_Union[_common_pb2.AudioFormat, str]] = ...) -> None: ...

class SeparateRequest(_message.Message):
    __slots__ = ("options", "audio")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    options: SeparationOptions
    audio: bytes
    def __init__(self, options: _Optional[_Union[SeparationOptions, _Mapping]] = ..., audio: _Optional[bytes] = ...) -> None: ...

class SeparationResult(_message.Message):
    __slots__ = ("model", "stems", "input")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STEMS_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    model: str
    stems: _containers.RepeatedScalarFieldContainer[str]
    input: _common_pb2.AudioInfo
    def __init__(self, model: _Optional[str] = ..., stems: _Optional[_Iterable[str]] = ..., input: _Optional[_Union[_common_pb2.AudioInfo, _Mapping]] = ...) -> None: ...

class SeparateResponse(_message.Message):
    __slots__ = ("progress", "stem", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    STEM_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: _common_pb2.StageProgress
    stem: _common_pb2.FileChunk
    result: SeparationResult
    def __init__(self, progress: _Optional[_Union[_common_pb2.StageProgress, _Mapping]] = ..., stem: _Optional[_Union[_common_pb2.FileChunk, _Mapping]] = ..., result: _Optional[_Union[SeparationResult, _Mapping]] = ...) -> None: ...
