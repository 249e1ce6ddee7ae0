import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from roar.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Stage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STAGE_UNSPECIFIED: _ClassVar[Stage]
    STAGE_UPLOAD: _ClassVar[Stage]
    STAGE_SEPARATION: _ClassVar[Stage]
    STAGE_TRANSCRIPTION: _ClassVar[Stage]
    STAGE_KARAOKE: _ClassVar[Stage]
    STAGE_COMPLETE: _ClassVar[Stage]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_PARTIAL: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
    JOB_STATE_PAUSED: _ClassVar[JobState]
STAGE_UNSPECIFIED: Stage
STAGE_UPLOAD: Stage
STAGE_SEPARATION: Stage
STAGE_TRANSCRIPTION: Stage
STAGE_KARAOKE: Stage
STAGE_COMPLETE: Stage
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_PARTIAL: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
JOB_STATE_PAUSED: JobState

class StartUploadRequest(_message.Message):
    __slots__ = ("filename", "size", "content_type")
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    filename: str
    size: int
    content_type: str
    def __init__(self, filename: _Optional[str] = ..., size: _Optional[int] = ..., content_type: _Optional[str] = ...) -> None: ...

class UploadChunkRequest(_message.Message):
    __slots__ = ("upload_id", "offset", "data")
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    offset: int
    data: bytes
    def __init__(self, upload_id: _Optional[str] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class GetUploadRequest(_message.Message):
    __slots__ = ("upload_id",)
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    def __init__(self, upload_id: _Optional[str] = ...) -> None: ...

class FinishUploadRequest(_message.Message):
    __slots__ = ("upload_id",)
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    def __init__(self, upload_id: _Optional[str] = ...) -> None: ...

class Upload(_message.Message):
    __slots__ = ("upload_id", "filename", "size", "committed", "max_chunk_bytes", "finished", "audio")
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    MAX_CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    filename: str
    size: int
    committed: int
    max_chunk_bytes: int
    finished: bool
    audio: _common_pb2.AudioInfo
    def __init__(self, upload_id: _Optional[str] = ..., filename: _Optional[str] = ..., size: _Optional[int] = ..., committed: _Optional[int] = ..., max_chunk_bytes: _Optional[int] = ..., finished: _Optional[bool] = ..., audio: _Optional[_Union[_common_pb2.AudioInfo, _Mapping]] = ...) -> None: ...

class JobOptions(_message.Message):
    __slots__ = ("separation_model", "all_stems", "audio_format", "transcription_model", "language", "lyrics", "lyrics_formats", "timeout_seconds", "karaoke_video")
    SEPARATION_MODEL_FIELD_NUMBER: _ClassVar[int]
    ALL_STEMS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FORMAT_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPTION_MODEL_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    LYRICS_FIELD_NUMBER: _ClassVar[int]
    LYRICS_FORMATS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    KARAOKE_VIDEO_FIELD_NUMBER: _ClassVar[int]
    separation_model: str
    all_stems: bool
    audio_format: _common_pb2.AudioFormat
    transcription_model: str
    language: str
    lyrics: str
    lyrics_formats: _containers.RepeatedScalarFieldContainer[_common_pb2.LyricsFormat]
    timeout_seconds: float
    karaoke_video: bool
    def __init__(self, separation_model: _Optional[str] = ..., all_stems: _Optional[bool] = ..., audio_format: _Optional[_Union[_common_pb2.AudioFormat, str]] = ..., transcription_model: _Optional[str] = ..., language: _Optional[str] = ..., lyrics: _Optional[str] = ..., lyrics_formats: _Optional[_Iterable[_Union[_common_pb2.LyricsFormat, str]]] = ..., timeout_seconds: _Optional[float] = ..., karaoke_video: _Optional[bool] = ...) -> None: ...

class ProcessRequest(_message.Message):
    __slots__ = ("upload_id", "options")
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    options: JobOptions
    def __init__(self, upload_id: _Optional[str] = ..., options: _Optional[_Union[JobOptions, _Mapping]] = ...) -> None: ...

class JobError(_message.Message):
    __slots__ = ("code", "message", "stage")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    stage: Stage
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., stage: _Optional[_Union[Stage, str]] = ...) -> None: ...

class Artifact(_message.Message):
    __slots__ = ("name", "kind", "size", "content_type")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    size: int
    content_type: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., size: _Optional[int] = ..., content_type: _Optional[str] = ...) -> None: ...

class ProgressEvent(_message.Message):
    __slots__ = ("job_id", "seq", "stage", "stage_percent", "overall_percent", "message", "error", "eta_seconds", "timestamp", "state", "artifacts", "errors")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    STAGE_PERCENT_FIELD_NUMBER: _ClassVar[int]
    OVERALL_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    seq: int
    stage: Stage
    stage_percent: float
    overall_percent: float
    message: str
    error: JobError
    eta_seconds: float
    timestamp: _timestamp_pb2.Timestamp
    state: JobState
    artifacts: _containers.RepeatedCompositeFieldContainer[Artifact]
    errors: _containers.RepeatedCompositeFieldContainer[JobError]
    def __init__(self, job_id: _Optional[str] = ..., seq: _Optional[int] = ..., stage: _Optional[_Union[Stage, str]] = ..., stage_percent: _Optional[float] = ..., overall_percent: _Optional[float] = ..., message: _Optional[str] = ..., error: _Optional[_Union[JobError, _Mapping]] = ..., eta_seconds: _Optional[float] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state: _Optional[_Union[JobState, str]] = ..., artifacts: _Optional[_Iterable[_Union[Artifact, _Mapping]]] = ..., errors: _Optional[_Iterable[_Union[JobError, _Mapping]]] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id", "after_seq")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    after_seq: int
    def __init__(self, job_id: _Optional[str] = ..., after_seq: _Optional[int] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "state", "filename", "options", "audio", "created", "updated", "last_event", "artifacts", "errors")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    LAST_EVENT_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: JobState
    filename: str
    options: JobOptions
    audio: _common_pb2.AudioInfo
    created: _timestamp_pb2.Timestamp
    updated: _timestamp_pb2.Timestamp
    last_event: ProgressEvent
    artifacts: _containers.RepeatedCompositeFieldContainer[Artifact]
    errors: _containers.RepeatedCompositeFieldContainer[JobError]
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., filename: _Optional[str] = ..., options: _Optional[_Union[JobOptions, _Mapping]] = ..., audio: _Optional[_Union[_common_pb2.AudioInfo, _Mapping]] = ..., created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_event: _Optional[_Union[ProgressEvent, _Mapping]] = ..., artifacts: _Optional[_Iterable[_Union[Artifact, _Mapping]]] = ..., errors: _Optional[_Iterable[_Union[JobError, _Mapping]]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class PauseJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ResumeJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class RetryJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class DownloadRequest(_message.Message):
    __slots__ = ("job_id", "name", "offset")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    name: str
    offset: int
    def __init__(self, job_id: _Optional[str] = ..., name: _Optional[str] = ..., offset: _Optional[int] = ...) -> None: ...

class DownloadChunk(_message.Message):
    __slots__ = ("data", "offset", "total_size")
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    offset: int
    total_size: int
    def __init__(self, data: _Optional[bytes] = ..., offset: _Optional[int] = ..., total_size: _Optional[int] = ...) -> None: ...

class GetServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServerInfo(_message.Message):
    __slots__ = ("version", "default_separation_model", "separation_models", "default_transcription_model", "transcription_models", "max_upload_bytes", "max_chunk_bytes")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_SEPARATION_MODEL_FIELD_NUMBER: _ClassVar[int]
    SEPARATION_MODELS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_TRANSCRIPTION_MODEL_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPTION_MODELS_FIELD_NUMBER: _ClassVar[int]
    MAX_UPLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    version: str
    default_separation_model: str
    separation_models: _containers.RepeatedScalarFieldContainer[str]
    default_transcription_model: str
    transcription_models: _containers.RepeatedScalarFieldContainer[str]
    max_upload_bytes: int
    max_chunk_bytes: int
    def __init__(self, version: _Optional[str] = ..., default_separation_model: _Optional[str] = ..., separation_models: _Optional[_Iterable[str]] = ..., default_transcription_model: _Optional[str] = ..., transcription_models: _Optional[_Iterable[str]] = ..., max_upload_bytes: _Optional[int] = ..., max_chunk_bytes: _Optional[int] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ("days",)
    DAYS_FIELD_NUMBER: _ClassVar[int]
    days: int
    def __init__(self, days: _Optional[int] = ...) -> None: ...

class StageStats(_message.Message):
    __slots__ = ("stage", "runs", "succeeded", "mean_seconds", "seconds_per_audio_minute")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    MEAN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_PER_AUDIO_MINUTE_FIELD_NUMBER: _ClassVar[int]
    stage: Stage
    runs: int
    succeeded: int
    mean_seconds: float
    seconds_per_audio_minute: float
    def __init__(self, stage: _Optional[_Union[Stage, str]] = ..., runs: _Optional[int] = ..., succeeded: _Optional[int] = ..., mean_seconds: _Optional[float] = ..., seconds_per_audio_minute: _Optional[float] = ...) -> None: ...

class DayStats(_message.Message):
    __slots__ = ("day", "jobs", "succeeded", "partial", "failed", "cancelled", "stages")
    DAY_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    day: _timestamp_pb2.Timestamp
    jobs: int
    succeeded: int
    partial: int
    failed: int
    cancelled: int
    stages: _containers.RepeatedCompositeFieldContainer[StageStats]
    def __init__(self, day: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., jobs: _Optional[int] = ..., succeeded: _Optional[int] = ..., partial: _Optional[int] = ..., failed: _Optional[int] = ..., cancelled: _Optional[int] = ..., stages: _Optional[_Iterable[_Union[StageStats, _Mapping]]] = ...) -> None: ...

class JobStats(_message.Message):
    __slots__ = ("job_id", "filename", "state", "created", "seconds", "audio_seconds", "errors")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    filename: str
    state: JobState
    created: _timestamp_pb2.Timestamp
    seconds: float
    audio_seconds: float
    errors: _containers.RepeatedCompositeFieldContainer[JobError]
    def __init__(self, job_id: _Optional[str] = ..., filename: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., seconds: _Optional[float] = ..., audio_seconds: _Optional[float] = ..., errors: _Optional[_Iterable[_Union[JobError, _Mapping]]] = ...) -> None: ...

class Stats(_message.Message):
    __slots__ = ("since", "all_callers", "jobs", "succeeded", "partial", "failed", "cancelled", "stages", "days", "slowest", "failed_jobs")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    ALL_CALLERS_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    DAYS_FIELD_NUMBER: _ClassVar[int]
    SLOWEST_FIELD_NUMBER: _ClassVar[int]
    FAILED_JOBS_FIELD_NUMBER: _ClassVar[int]
    since: _timestamp_pb2.Timestamp
    all_callers: bool
    jobs: int
    succeeded: int
    partial: int
    failed: int
    cancelled: int
    stages: _containers.RepeatedCompositeFieldContainer[StageStats]
    days: _containers.RepeatedCompositeFieldContainer[DayStats]
    slowest: _containers.RepeatedCompositeFieldContainer[JobStats]
    failed_jobs: _containers.RepeatedCompositeFieldContainer[JobStats]
    def __init__(self, since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., all_callers: _Optional[bool] = ..., jobs: _Optional[int] = ..., succeeded: _Optional[int] = ..., partial: _Optional[int] = ..., failed: _Optional[int] = ..., cancelled: _Optional[int] = ..., stages: _Optional[_Iterable[_Union[StageStats, _Mapping]]] = ..., days: _Optional[_Iterable[_Union[DayStats, _Mapping]]] = ..., slowest: _Optional[_Iterable[_Union[JobStats, _Mapping]]] = ..., failed_jobs: _Optional[_Iterable[_Union[JobStats, _Mapping]]] = ...) -> None: ...
