"""Models are the operator's choice: clients name offered models, never paths, and model files load as
weights only. A real malicious demucs repo (its pickle creates a marker file when it runs) is named by
clients through the orchestrator and straight to the stages, and listed by an operator."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import demucs.hf
import demucs.repo
import grpc
import numpy as np
import pytest
import torch
from demucs.htdemucs import HTDemucs
from demucs.states import save_with_checksum
from safetensors.torch import load_file

from roar import audio, client
from roar.catalog import DEMUCS_MODELS, derived_name, separation_catalog, transcription_catalog
from roar.channel_options import CHANNEL_OPTIONS
from roar.config import Settings
from roar.errors import BadInput, ModelUnavailable
from roar.models import ModelCache
from roar.service import request_stream
from roar.v1 import orchestrator_pb2 as pb
from roar.v1 import orchestrator_pb2_grpc as pb_grpc
from roar.v1 import separation_pb2, separation_pb2_grpc, transcription_pb2, transcription_pb2_grpc
from services.separation.backends import load_separator
from services.separation.demucs_backend import load_demucs_model, load_model_safely
from services.separation.server import SeparationServicer
from services.transcription.server import TranscriptionServicer
from services.transcription.transcriber import load_transcriber
from tests.support.songs import write_song
from tests.support.suite import Suite

# Names a client might try to reach server files or models with: absolute and relative paths (one
# that exists, one that does not), a demucs NAME@DIR, hub ids the suite does not offer.
PATH_LIKE = ["/etc", "../x", "/no/such/dir", "x@/etc", "htdemucs", "openai/whisper-large-v3"]


class Payload:
    """Unpickling this calls open(marker, "w"): the marker file's existence proves the pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def build_evil_repo(repo_dir: Path, marker: Path) -> str:
    """A local demucs repo laid out as demucs saves them (`<sig>-<checksum>.th` + `NAME.yaml`) whose
    package carries the payload; returns its "evil@DIR" source."""
    package = {"klass": HTDemucs, "args": (), "kwargs": {}, "state": {}, "training_args": Payload(marker)}
    repo_dir.mkdir(parents=True)
    save_with_checksum(package, repo_dir / "evil_sig.th")
    (repo_dir / "evil.yaml").write_text("models: ['evil_sig']\n")
    return f"evil@{repo_dir}"


@pytest.fixture(scope="module")
def evil(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path]:
    """The evil repo's source, its dir and the marker its payload would create."""
    root = tmp_path_factory.mktemp("evil")
    marker = root / "payload-ran"
    return build_evil_repo(root / "repo", marker), root / "repo", marker


def suite_settings(tiny_models: dict[str, str]) -> Settings:
    """The settings the suite's processes read (conftest's tiny_models)."""
    return Settings(
        separation_model=tiny_models["ROAR_SEPARATION_MODEL"],
        separation_models=tuple(tiny_models["ROAR_SEPARATION_MODELS"].split(",")),
        transcription_model=tiny_models["ROAR_TRANSCRIPTION_MODEL"],
        transcription_models=tuple(tiny_models["ROAR_TRANSCRIPTION_MODELS"].split(",")),
    )


# The catalog


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("tiny@/models/demucs", "tiny"),
        ("/models/whisper-small/", "whisper-small"),
        ("~/models/spleeter-2stems", "spleeter-2stems"),
        ("./whisper", "whisper"),
        ("openai/whisper-small", "openai/whisper-small"),
        ("htdemucs", "htdemucs"),
    ],
)
def test_a_default_given_as_a_source_is_offered_under_a_derived_name(source: str, name: str) -> None:
    catalog = separation_catalog(Settings(separation_model=source))
    assert derived_name(source) == name
    assert catalog.default == name and catalog.names[0] == name and catalog.source_of(name) == source


def test_without_a_list_the_builtin_models_are_offered_and_an_operators_default_wins() -> None:
    assert separation_catalog(Settings()).names == list(DEMUCS_MODELS)
    assert transcription_catalog(Settings()).default == "openai/whisper-small"
    mine = separation_catalog(Settings(separation_model="htdemucs@/srv/repo"))
    assert mine.names == list(DEMUCS_MODELS) and mine.source_of("htdemucs") == "htdemucs@/srv/repo"


def test_a_listed_default_is_a_name_and_a_list_replaces_the_builtins() -> None:
    settings = Settings(separation_models=("fast=mdx@/srv/a", "good=htdemucs_ft"), separation_model="good")
    catalog = separation_catalog(settings)
    assert catalog.names == ["good", "fast"] and catalog.default == "good"
    assert catalog.source_of("fast") == "mdx@/srv/a"
    assert catalog.name_for("") == "good" and catalog.name_for("fast") == "fast"
    assert catalog.setting_of("good") == "ROAR_SEPARATION_MODEL"
    assert catalog.setting_of("fast") == "ROAR_SEPARATION_MODELS"


@pytest.mark.parametrize(
    ("models", "default", "setting"),
    [
        (("no-equals",), "htdemucs", "ROAR_SEPARATION_MODELS"),
        (("=htdemucs",), "htdemucs", "ROAR_SEPARATION_MODELS"),
        (("empty=",), "htdemucs", "ROAR_SEPARATION_MODELS"),
        (("two words=htdemucs",), "htdemucs", "ROAR_SEPARATION_MODELS"),
        (("a=htdemucs", "a=mdx"), "htdemucs", "ROAR_SEPARATION_MODELS"),
        (("tiny=tiny@/srv/a",), "tiny@/srv/b", "ROAR_SEPARATION_MODEL"),
        ((), "/", "ROAR_SEPARATION_MODEL"),
    ],
    ids=["no-equals", "no-name", "no-source", "bad-name", "twice", "default-clashes", "underivable"],
)
def test_a_malformed_setting_stops_the_start_naming_it(
    models: tuple[str, ...], default: str, setting: str
) -> None:
    with pytest.raises(SystemExit, match=f"^{setting}:"):
        separation_catalog(Settings(separation_models=models, separation_model=default))


def test_roar_up_refuses_a_malformed_model_list(tmp_path: Path) -> None:
    env = {"ROAR_TRANSCRIPTION_MODELS": "whisper"}
    up = Suite(tmp_path / "data", env, tmp_path / "roar-up.log")
    with pytest.raises(RuntimeError, match="ROAR_TRANSCRIPTION_MODELS: malformed entry 'whisper'"):
        up.start(timeout=30)


def test_unknown_names_all_get_one_message_that_repeats_none_of_them(evil: tuple[str, Path, Path]) -> None:
    catalog = separation_catalog(
        Settings(separation_models=("tiny=tiny@/srv/models",), separation_model="tiny")
    )
    messages = set()
    for name in [*PATH_LIKE, evil[0]]:
        with pytest.raises(BadInput) as raised:
            catalog.name_for(name)
        messages.add(raised.value.message)
    assert len(messages) == 1
    (message,) = messages
    assert "offers tiny (" in message and "ROAR_SEPARATION_MODELS" in message
    assert "/srv" not in message and "/etc" not in message and str(evil[1]) not in message


# Loading model files


def test_an_operators_evil_demucs_repo_is_refused_before_its_pickle_runs(
    evil: tuple[str, Path, Path], tmp_path: Path
) -> None:
    source, repo_dir, marker = evil
    with pytest.raises(ModelUnavailable, match="more than a demucs model's weights"):
        load_demucs_model(source)
    catalog = separation_catalog(Settings(separation_models=(f"evil={source}",)))
    separators = ModelCache(lambda name, source: load_separator(source, "cpu"), catalog)
    with pytest.raises(ModelUnavailable) as raised:
        separators.get("evil")
    assert raised.value.code == "FAILED_PRECONDITION"
    assert "model 'evil'" in raised.value.message and "ROAR_SEPARATION_MODELS" in raised.value.message
    assert str(repo_dir) not in raised.value.message
    assert not marker.exists()

    # The payload is real: unpickled as demucs 4.1 does (weights_only=False), it runs.
    other_marker = tmp_path / "payload-ran"
    build_evil_repo(tmp_path / "repo", other_marker)
    torch.load(next((tmp_path / "repo").glob("evil_sig-*.th")), map_location="cpu", weights_only=False)
    assert other_marker.exists()


def test_a_package_naming_another_class_is_refused_before_it_is_called(tmp_path: Path) -> None:
    # Hub safetensors name their class in metadata and reach demucs' load_model as a dict: the
    # same check applies there.
    marker = tmp_path / "called"
    package = {"klass": marker.touch, "args": (), "kwargs": {}, "state": {}}
    assert demucs.repo.load_model is load_model_safely and demucs.hf.load_model is load_model_safely
    with pytest.raises(ModelUnavailable):
        load_model_safely(package)
    assert not marker.exists()


def test_transcription_models_never_load_pickled_weights(tiny_models: dict[str, str], tmp_path: Path) -> None:
    """A Whisper dir whose weights are a pickle (pytorch_model.bin), which transformers would
    otherwise load, is refused: only safetensors load."""
    model_dir = tmp_path / "pickled"
    shutil.copytree(tiny_models["ROAR_TRANSCRIPTION_MODEL"], model_dir)
    torch.save(load_file(model_dir / "model.safetensors"), model_dir / "pytorch_model.bin")
    (model_dir / "model.safetensors").unlink()
    catalog = transcription_catalog(Settings(transcription_models=(f"pickled={model_dir}",)))
    transcribers = ModelCache(lambda name, source: load_transcriber(source, "cpu", name), catalog)
    with pytest.raises(ModelUnavailable) as raised:
        transcribers.get("pickled")
    assert "model 'pickled'" in raised.value.message and str(tmp_path) not in raised.value.message


# The stage services, called directly


@asynccontextmanager
async def serving(register: Callable[[grpc.aio.Server], None]) -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server(options=CHANNEL_OPTIONS)
    register(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS) as channel:
            yield channel
    finally:
        await server.stop(grace=None)


async def refusals(call: Callable[[str], AsyncIterator[object]], names: list[str]) -> set[str]:
    """Each name's call must fail with INVALID_ARGUMENT; the set of their messages."""
    messages = set()
    for name in names:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            _ = [response async for response in call(name)]
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, raised.value.details())
        messages.add(raised.value.details() or "")
    return messages


async def test_stages_refuse_names_they_do_not_offer_alike(
    tiny_models: dict[str, str], evil: tuple[str, Path, Path]
) -> None:
    source, repo_dir, marker = evil
    settings = suite_settings(tiny_models)
    separators = ModelCache(lambda name, source: load_separator(source, "cpu"), separation_catalog(settings))
    transcribers = ModelCache(
        lambda name, source: load_transcriber(source, "cpu", name), transcription_catalog(settings)
    )
    song = audio.encode(np.zeros((2, 44100), dtype=np.float32), 44100, "wav")

    def separate(stub: separation_pb2_grpc.SeparationStub) -> Callable[[str], AsyncIterator[object]]:
        options = separation_pb2.SeparationOptions
        return lambda name: stub.Separate(
            request_stream(separation_pb2.SeparateRequest, options(model=name), "audio", song)
        )

    def transcribe(stub: transcription_pb2_grpc.TranscriptionStub) -> Callable[[str], AsyncIterator[object]]:
        options = transcription_pb2.TranscriptionOptions
        return lambda name: stub.Transcribe(
            request_stream(transcription_pb2.TranscribeRequest, options(model=name), "audio", song)
        )

    def register(server: grpc.aio.Server) -> None:
        separation_pb2_grpc.add_SeparationServicer_to_server(SeparationServicer(separators), server)
        transcription = TranscriptionServicer(transcribers)
        transcription_pb2_grpc.add_TranscriptionServicer_to_server(transcription, server)

    names = [*PATH_LIKE, source]
    async with serving(register) as channel:
        separation = await refusals(separate(separation_pb2_grpc.SeparationStub(channel)), names)
        transcription = await refusals(transcribe(transcription_pb2_grpc.TranscriptionStub(channel)), names)
    assert len(separation) == 1 and "offers tiny, tiny-again, broken" in next(iter(separation))
    assert len(transcription) == 1 and "offers whisper, whisper-again, broken" in next(iter(transcription))
    assert not any(str(repo_dir) in m or "/etc" in m for m in separation | transcription)
    assert not marker.exists()


# Through the orchestrator


@pytest.fixture
async def stub(suite: Suite) -> AsyncIterator[pb_grpc.OrchestratorStub]:
    async with client.channel(suite.address) as channel:
        yield pb_grpc.OrchestratorStub(channel)


async def test_server_info_lists_the_offered_names(
    stub: pb_grpc.OrchestratorStub, tiny_models: dict[str, str]
) -> None:
    info = await stub.GetServerInfo(pb.GetServerInfoRequest())
    assert info.default_separation_model == "tiny"
    assert list(info.separation_models) == ["tiny", "tiny-again", "broken"]
    assert info.default_transcription_model == "whisper"
    assert list(info.transcription_models) == ["whisper", "whisper-again", "broken"]
    models_dir = str(Path(tiny_models["ROAR_TRANSCRIPTION_MODEL"]).parent)
    assert models_dir not in str(info)


async def test_jobs_name_offered_models_only(
    stub: pb_grpc.OrchestratorStub, suite: Suite, evil: tuple[str, Path, Path], tmp_path: Path
) -> None:
    source, repo_dir, marker = evil
    upload = await client.upload_file(stub, write_song(tmp_path / "song.wav", 3.0))
    jobs_before = len((await stub.ListJobs(pb.ListJobsRequest(page_size=500))).jobs)
    for field in ("separation_model", "transcription_model"):
        messages = set()
        for name in [*PATH_LIKE, source]:
            options = pb.JobOptions(**{field: name})
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.Process(pb.ProcessRequest(upload_id=upload.upload_id, options=options)).read()
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, name)
            messages.add(raised.value.details() or "")
        assert len(messages) == 1, messages
        assert str(repo_dir) not in next(iter(messages)) and "/etc" not in next(iter(messages))
    assert len((await stub.ListJobs(pb.ListJobsRequest(page_size=500))).jobs) == jobs_before
    assert not marker.exists()
    assert "evil" not in suite.log()  # no stage was asked for it

    # The same upload, with both stages' non-default names.
    options = pb.JobOptions(separation_model="tiny-again", transcription_model="whisper-again")
    events = [e async for e in client.process(stub, upload.upload_id, options)]
    assert events[-1].state == pb.JOB_STATE_SUCCEEDED, events[-1]
    messages = [e.message for e in events]
    assert "loading model tiny-again" in messages and "loading model whisper-again" in messages
