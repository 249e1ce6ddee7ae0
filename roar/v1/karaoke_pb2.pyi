from roar.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class KaraokeOptions(_message.Message):
    __slots__ = ("transcript", "formats", "title", "duration_seconds")
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    FORMATS_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    transcript: _common_pb2.Transcript
    formats: _containers.RepeatedScalarFieldContainer[_common_pb2.LyricsFormat]
    title: str
    duration_seconds: float
    def __init__(self, transcript: _Optional[_Union[_common_pb2.Transcript, _Mapping]] = ..., formats: _Optional[_Iterable[_Union[_common_pb2.LyricsFormat, str]]] = ..., title: _Optional[str] = ..., duration_seconds: _Optional[float] = ...) -> None: ...

class BuildRequest(_message.Message):
    __slots__ = ("options",)
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    options: KaraokeOptions
    def __init__(self, options: _Optional[_Union[KaraokeOptions, _Mapping]] = ...) -> None: ...

class BuildResponse(_message.Message):
    __slots__ = ("progress", "file")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    progress: _common_pb2.StageProgress
    file: _common_pb2.FileChunk
    def __init__(self, progress: _Optional[_Union[_common_pb2.StageProgress, _Mapping]] = ..., file: _Optional[_Union[_common_pb2.FileChunk, _Mapping]] = ...) -> None: ...

class VideoOptions(_message.Message):
    __slots__ = ("karaoke", "width", "height")
    KARAOKE_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    karaoke: KaraokeOptions
    width: int
    height: int
    def __init__(self, karaoke: _Optional[_Union[KaraokeOptions, _Mapping]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class RenderVideoRequest(_message.Message):
    __slots__ = ("options", "audio")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    options: VideoOptions
    audio: bytes
    def __init__(self, options: _Optional[_Union[VideoOptions, _Mapping]] = ..., audio: _Optional[bytes] = ...) -> None: ...
