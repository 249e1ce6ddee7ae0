from roar.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class KaraokeOptions(_message.Message):
    __slots__ = ("transcript", "lyrics", "formats", "instrumental_format", "title")
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    LYRICS_FIELD_NUMBER: _ClassVar[int]
    FORMATS_FIELD_NUMBER: _ClassVar[int]
    INSTRUMENTAL_FORMAT_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    transcript: _common_pb2.Transcript
    lyrics: str
    formats: _containers.RepeatedScalarFieldContainer[_common_pb2.LyricsFormat]
    instrumental_format: _common_pb2.AudioFormat
    title: str
    def __init__(self, transcript: _Optional[_Union[_common_pb2.Transcript, _Mapping]] = ..., lyrics: _Optional[str] = ..., formats: _Optional[_Iterable[_Union[_common_pb2.LyricsFormat, str]]] = ..., instrumental_format: _Optional[_Union[_common_pb2.AudioFormat, str]] = ..., title: _Optional[str] = ...) -> None: ...

class BuildRequest(_message.Message):
    __slots__ = ("options", "instrumental")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    INSTRUMENTAL_FIELD_NUMBER: _ClassVar[int]
    options: KaraokeOptions
    instrumental: bytes
    def __init__(self, options: _Optional[_Union[KaraokeOptions, _Mapping]] = ..., instrumental: _Optional[bytes] = ...) -> None: ...

class BuildResponse(_message.Message):
    __slots__ = ("progress", "file")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    progress: _common_pb2.StageProgress
    file: _common_pb2.FileChunk
    def __init__(self, progress: _Optional[_Union[_common_pb2.StageProgress, _Mapping]] = ..., file: _Optional[_Union[_common_pb2.FileChunk, _Mapping]] = ...) -> None: ...
