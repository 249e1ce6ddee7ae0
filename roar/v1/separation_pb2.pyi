from roar.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SeparationOptions(_message.Message):
    __slots__ = ("model", "all_stems", "first_window")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ALL_STEMS_FIELD_NUMBER: _ClassVar[int]
    FIRST_WINDOW_FIELD_NUMBER: _ClassVar[int]
    model: str
    all_stems: bool
    first_window: int
    def __init__(self, model: _Optional[str] = ..., all_stems: _Optional[bool] = ..., first_window: _Optional[int] = ...) -> None: ...

class SeparateRequest(_message.Message):
    __slots__ = ("options", "audio")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    options: SeparationOptions
    audio: bytes
    def __init__(self, options: _Optional[_Union[SeparationOptions, _Mapping]] = ..., audio: _Optional[bytes] = ...) -> None: ...

class SeparationResult(_message.Message):
    __slots__ = ("model", "stems", "input", "sample_rate", "channels", "frames", "window_count")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STEMS_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    WINDOW_COUNT_FIELD_NUMBER: _ClassVar[int]
    model: str
    stems: _containers.RepeatedScalarFieldContainer[str]
    input: _common_pb2.AudioInfo
    sample_rate: int
    channels: int
    frames: int
    window_count: int
    def __init__(self, model: _Optional[str] = ..., stems: _Optional[_Iterable[str]] = ..., input: _Optional[_Union[_common_pb2.AudioInfo, _Mapping]] = ..., sample_rate: _Optional[int] = ..., channels: _Optional[int] = ..., frames: _Optional[int] = ..., window_count: _Optional[int] = ...) -> None: ...

class StemWindow(_message.Message):
    __slots__ = ("index", "stem", "start_frame", "pcm")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    STEM_FIELD_NUMBER: _ClassVar[int]
    START_FRAME_FIELD_NUMBER: _ClassVar[int]
    PCM_FIELD_NUMBER: _ClassVar[int]
    index: int
    stem: str
    start_frame: int
    pcm: bytes
    def __init__(self, index: _Optional[int] = ..., stem: _Optional[str] = ..., start_frame: _Optional[int] = ..., pcm: _Optional[bytes] = ...) -> None: ...

class SeparateResponse(_message.Message):
    __slots__ = ("progress", "result", "window")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    progress: _common_pb2.StageProgress
    result: SeparationResult
    window: StemWindow
    def __init__(self, progress: _Optional[_Union[_common_pb2.StageProgress, _Mapping]] = ..., result: _Optional[_Union[SeparationResult, _Mapping]] = ..., window: _Optional[_Union[StemWindow, _Mapping]] = ...) -> None: ...
