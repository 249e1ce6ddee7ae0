"""The deployment files: Kubernetes manifests valid for the API and consistent with each other, and
Dockerfiles whose commands, ports and copied sources match the servers they start."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from roar import healthcheck
from roar.config import Settings, port_of

REPO = Path(__file__).resolve().parents[1]
KUBE_DIR = REPO / "deploy" / "kubernetes"
KUBE_VERSION = "1.37.0"
NAMESPACE = "roar"
IMAGE_REPOSITORY = "ghcr.io/roar-karaoke"
REPO_PACKAGES = {"roar", "orchestrator", "services"}
MONITORING_NAMESPACE = {"kubernetes.io/metadata.name": "monitoring"}
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "StorageClass", "ClusterRole", "ClusterRoleBinding"}

MANIFESTS = sorted(p for p in KUBE_DIR.glob("*.yaml") if p.name != "kustomization.yaml")
RESOURCES = [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]
DOCKERFILES = sorted([*REPO.glob("services/*/Dockerfile"), REPO / "orchestrator" / "Dockerfile"])


def _named(kind: str) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in RESOURCES if r["kind"] == kind}


DEPLOYMENTS = _named("Deployment")
SERVICES = _named("Service")
CLAIMS = _named("PersistentVolumeClaim")


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _ports(container: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container["ports"]}


def _env(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment: its ConfigMaps, then its own env on top (values from Secrets
    as the Secrets here hold them)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env |= _named("ConfigMap")[source["configMapRef"]["name"]]["data"]
    for e in container.get("env", []):
        ref = e["valueFrom"]["secretKeyRef"] if "valueFrom" in e else None
        env[e["name"]] = _named("Secret")[ref["name"]]["stringData"][ref["key"]] if ref else e["value"]
    return env


@dataclass(frozen=True)
class Dockerfile:
    path: Path
    instructions: list[tuple[str, str]]  # (INSTRUCTION, arguments), continuation lines joined

    @classmethod
    def read(cls, path: Path) -> Dockerfile:
        text = re.sub(r"\\\n", " ", path.read_text())
        lines = [line.strip() for line in text.splitlines()]
        pairs = [line.split(None, 1) for line in lines if line and not line.startswith("#")]
        return cls(path, [(p[0].upper(), p[1] if len(p) > 1 else "") for p in pairs])

    def all(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]

    @property
    def cmd(self) -> list[str]:
        (cmd,) = self.all("CMD")
        return json.loads(cmd)

    def flag(self, name: str) -> str | None:
        cmd = self.cmd
        return cmd[cmd.index(name) + 1] if name in cmd else None

    @property
    def module(self) -> str:
        cmd = self.cmd
        assert cmd[:2] == ["python", "-m"], f"{self.path}: CMD should be python -m MODULE, got {cmd}"
        return cmd[2]

    def served_port(self, env: dict[str, str]) -> int:
        """The gRPC port the CMD serves: its --port, else a stage server's default, the port of its
        ROAR_<STAGE>_ADDR."""
        if port := self.flag("--port"):
            return int(port)
        stage = self.path.parent.name
        return port_of(env.get(f"ROAR_{stage.upper()}_ADDR") or getattr(Settings(), f"{stage}_addr"))

    @property
    def copied(self) -> list[str]:
        """Sources the build copies from the repository root."""
        return [src for args in self.all("COPY") for src in args.split()[:-1]]


def _dockerfile_for_image(image: str) -> Path:
    name = image.removeprefix(f"{IMAGE_REPOSITORY}/").partition(":")[0]
    return REPO / name / "Dockerfile" if name == "orchestrator" else REPO / "services" / name / "Dockerfile"


def _imported_repo_packages(directory: Path) -> set[str]:
    found = set()
    for source in directory.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found & REPO_PACKAGES


def _argparse_flags(module_file: Path) -> set[str]:
    flags = set()
    for node in ast.walk(ast.parse(module_file.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            flags |= {a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)}
    return flags


# --- the manifests on their own ---


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid_for_the_kubernetes_api(path: Path) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="needs PyPI kubernetes-validate (a dev dependency) for the API schemas"
    )
    for resource in yaml.safe_load_all(path.read_text()):
        try:
            kubernetes_validate.validate(resource, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.name}: {resource['kind']}/{resource['metadata']['name']}: {exc.message}")


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((KUBE_DIR / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == [p.name for p in MANIFESTS]
    assert kustomization["namespace"] == NAMESPACE


def test_every_resource_is_in_the_roar_namespace() -> None:
    assert NAMESPACE in _named("Namespace")
    for r in RESOURCES:
        if r["kind"] not in CLUSTER_SCOPED:
            assert r["metadata"].get("namespace") == NAMESPACE, f"{r['kind']}/{r['metadata']['name']}"


# Every ROAR_ setting roar/config.py reads: a misspelt one elsewhere would be silently ignored.
SETTINGS_READ = set(re.findall(r'"(ROAR_[A-Z_]+)"', (REPO / "roar" / "config.py").read_text()))


def test_roar_settings_in_the_manifests_are_ones_the_code_reads() -> None:
    for name, deployment in DEPLOYMENTS.items():
        unknown = {k for k in _env(_container(deployment)) if k.startswith("ROAR_")} - SETTINGS_READ
        assert not unknown, f"{name} sets {unknown}, which roar/config.py does not read"


def test_secrets_come_from_secrets_that_ship_empty() -> None:
    # Nothing usable is committed: the servers refuse to listen beyond the pod until the keys are
    # filled in, and the orchestrators to start until the database URL is.
    assert _named("Secret")["roar-keys"]["stringData"] == {"ROAR_ADMIN_KEY": "", "ROAR_STAGE_KEY": ""}
    assert _named("Secret")["roar-database"]["stringData"] == {"ROAR_DATABASE_URL": ""}
    for name, deployment in DEPLOYMENTS.items():
        container = _container(deployment)
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
        # Every stage checks the stage key the orchestrator presents; only the orchestrator holds the
        # admin key and the database's URL (with its password).
        assert refs["ROAR_STAGE_KEY"] == {"name": "roar-keys", "key": "ROAR_STAGE_KEY"}, name
        expected = (
            {"ROAR_ADMIN_KEY", "ROAR_STAGE_KEY", "ROAR_DATABASE_URL"}
            if "orchestrator" in container["image"]
            else {"ROAR_STAGE_KEY"}
        )
        assert set(refs) == expected, name


def test_several_orchestrators_share_a_database_and_a_volume() -> None:
    (orchestrator,) = (d for d in DEPLOYMENTS.values() if "orchestrator" in _container(d)["image"])
    assert orchestrator["spec"]["replicas"] >= 2
    env = {e["name"]: e for e in _container(orchestrator)["env"]}
    assert env["ROAR_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "roar-database"
    assert float(env["ROAR_LEASE_SECONDS"]["value"]) > 0
    volumes = _pod_volumes(orchestrator)
    claims = [v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v]
    assert claims
    for claim in claims:
        assert CLAIMS[claim]["spec"]["accessModes"] == ["ReadWriteMany"], f"{claim}: every replica writes it"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_reaches_its_deployment_on_the_container_port(name: str) -> None:
    service = SERVICES[name]
    selector = service["spec"]["selector"]
    selected = [d for d in DEPLOYMENTS.values() if selector.items() <= _pod_labels(d).items()]
    assert len(selected) == 1, f"service {name} selects {len(selected)} deployments"
    assert selected[0]["spec"]["selector"]["matchLabels"].items() <= selector.items()
    ports = _ports(_container(selected[0]))
    headless = service["spec"].get("clusterIP") == "None"
    for port in service["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        target = ports.get(target) if isinstance(target, str) else target
        assert target in ports.values(), f"service {name} port {port['name']} targets no container port"
        if headless:
            # DNS gives the pods' addresses: clients dial them with the Service's port.
            assert port["port"] == target, f"headless service {name} maps {port['port']} to {target}"


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_probes_check_health_on_the_served_ports(name: str) -> None:
    container = _container(DEPLOYMENTS[name])
    ports = _ports(container)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        check = container[probe]
        if "httpGet" in check:  # the orchestrator's readiness: /readyz on its web port
            assert check["httpGet"] == {"path": "/readyz", "port": "http"} and "http" in ports, name
        else:
            assert check["grpc"]["port"] == ports["grpc"], f"{name} {probe}"


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_metrics_are_scraped_where_they_are_served(name: str) -> None:
    deployment = DEPLOYMENTS[name]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    container = _container(deployment)
    ports = _ports(container)
    # The orchestrator serves /metrics on its web port, a stage on ROAR_METRICS_PORT.
    port = ports["http"] if "http" in ports else int(_env(container)["ROAR_METRICS_PORT"])
    assert int(annotations["prometheus.io/port"]) == port
    assert port in ports.values(), f"{name} does not declare its metrics port"


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_volumes_claims_and_writable_paths(name: str) -> None:
    spec = DEPLOYMENTS[name]["spec"]
    pod = spec["template"]["spec"]
    container = _container(DEPLOYMENTS[name])
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    for claim in claims.values():
        assert claim in CLAIMS, f"{name} mounts the undefined claim {claim}"
        if "ReadWriteOnce" in CLAIMS[claim]["spec"]["accessModes"]:
            # One node, one writer (SQLite): a second pod, even during a rollout, would be one too many.
            assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate", name
    # Data and model caches must land on their volumes, not in the (read-only) image.
    env = _env(container)
    for variable in ("ROAR_DATA_DIR", "HF_HOME", "TORCH_HOME"):
        if variable in env:
            path = Path(env[variable])
            volume = next((v for m, v in mounts.items() if path.is_relative_to(m)), None)
            assert volume in claims, f"{name}: {variable}={path} is on no persistent volume"
    if container["securityContext"].get("readOnlyRootFilesystem"):
        assert "/tmp" in mounts, f"{name} has a read-only root and no writable /tmp"
    if pod["securityContext"].get("runAsNonRoot"):
        # The images name their user; the kubelet can only verify a numeric one.
        assert pod["securityContext"].get("runAsUser", 0) > 0, name


def test_orchestrator_reaches_every_stage_through_a_headless_service() -> None:
    (orchestrator,) = (d for d in DEPLOYMENTS.values() if "orchestrator" in _container(d)["image"])
    env = _env(_container(orchestrator))
    variables = [f"ROAR_{f.name.upper()}" for f in dataclasses.fields(Settings) if f.name.endswith("_addr")]
    assert variables, "roar/config.py has no stage addresses"
    for variable in variables:
        match = re.fullmatch(
            rf"(?:dns:///)?(?P<host>[a-z0-9-]+)(?:\.{NAMESPACE}(?:\.svc\.cluster\.local)?)?:(?P<port>\d+)",
            env.get(variable, ""),
        )
        assert match, f"{variable}={env.get(variable)!r} is not a Service address in namespace {NAMESPACE}"
        service = SERVICES.get(match["host"])
        assert service is not None, f"{variable} names no Service here"
        assert int(match["port"]) in {p["port"] for p in service["spec"]["ports"]}, variable
        # Without it the round_robin channel sees one address and every call goes to one replica.
        assert service["spec"].get("clusterIP") == "None", f"service {match['host']} should be headless"


def _pod_volumes(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    return deployment["spec"]["template"]["spec"]["volumes"]


def _pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"]["labels"]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert "matchExpressions" not in selector, "the checks here read matchLabels only"
    return selector.get("matchLabels", {}).items() <= labels.items()


def test_only_the_orchestrator_reaches_the_stages() -> None:
    policies = [p for p in _named("NetworkPolicy").values() if "Ingress" in p["spec"]["policyTypes"]]
    (orchestrator,) = (d for d in DEPLOYMENTS.values() if "orchestrator" in _container(d)["image"])
    stages = {name: d for name, d in DEPLOYMENTS.items() if d is not orchestrator}
    assert stages
    for name, stage in stages.items():
        selecting = [p for p in policies if _selects(p["spec"]["podSelector"], _pod_labels(stage))]
        assert selecting, f"no NetworkPolicy limits who reaches {name}"
        rules = [rule for p in selecting for rule in p["spec"].get("ingress", [])]
        assert rules, f"nothing may reach {name}, not even the orchestrator"
        for rule in rules:
            # A rule without `from` admits every source; namespaceSelector and ipBlock admit others.
            assert rule.get("from"), f"{name} admits every source"
            ports = {(p.get("protocol", "TCP"), p["port"]) for p in rule.get("ports", [])}
            if ports == {("TCP", _ports(_container(stage))["metrics"])}:
                # Prometheus' namespace may scrape, and nothing else reaches the metrics port.
                assert rule["from"] == [{"namespaceSelector": {"matchLabels": MONITORING_NAMESPACE}}], name
                continue
            for peer in rule["from"]:
                assert set(peer) == {"podSelector"}, f"{name} admits {peer}"
                admitted = [
                    d for d in DEPLOYMENTS if _selects(peer["podSelector"], _pod_labels(DEPLOYMENTS[d]))
                ]
                assert admitted == [orchestrator["metadata"]["name"]], f"{name} admits {admitted}"
            assert ports == {("TCP", _ports(_container(stage))["grpc"])}, f"{name} opens {ports}"
    # The orchestrator is the entry point: no policy closes it.
    assert not [p for p in policies if _selects(p["spec"]["podSelector"], _pod_labels(orchestrator))]


# --- images: Dockerfiles and the deployments that run them ---


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_deployment_image_is_built_by_a_dockerfile_here(name: str) -> None:
    image = _container(DEPLOYMENTS[name])["image"]
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert image.startswith(f"{IMAGE_REPOSITORY}/") and image.endswith(f":{version}"), image
    dockerfile = _dockerfile_for_image(image)
    assert dockerfile.is_file(), f"{name} runs {image}, but {dockerfile.relative_to(REPO)} does not exist"
    ports = _ports(_container(DEPLOYMENTS[name]))
    built = Dockerfile.read(dockerfile)
    assert built.flag("--host") == "0.0.0.0", f"{dockerfile}: the server must listen beyond the pod"
    assert built.served_port(_env(_container(DEPLOYMENTS[name]))) == ports["grpc"]
    if "http" in ports:
        assert int(built.flag("--web-port") or 0) == ports["http"]
    assert set(ports.values()) <= {int(p) for args in built.all("EXPOSE") for p in args.split()}


def test_every_dockerfile_is_deployed() -> None:
    deployed = {_dockerfile_for_image(_container(d)["image"]) for d in DEPLOYMENTS.values()}
    assert set(DOCKERFILES) <= deployed


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.parent.relative_to(REPO)))
def test_dockerfile_runs_a_module_it_copies_with_flags_it_accepts(path: Path) -> None:
    built = Dockerfile.read(path)
    module_file = REPO / (built.module.replace(".", "/") + ".py")
    assert module_file.is_file(), f"{path}: CMD runs {built.module}, which is not in the repository"
    flags = {arg for arg in built.cmd[3:] if arg.startswith("--")}
    assert flags <= _argparse_flags(module_file), f"{built.module} does not accept {flags}"
    packages = {src for src in built.copied if src in REPO_PACKAGES}
    assert built.module.split(".")[0] in packages
    for package in packages:
        missing = _imported_repo_packages(REPO / package) - packages
        assert not missing, f"{path}: {package} imports {missing}, which the image does not copy"
    port = built.served_port({})
    for check in built.all("HEALTHCHECK"):
        assert f'"roar.healthcheck", "127.0.0.1:{port}"]' in check, f"{path}: HEALTHCHECK asks another port"


def test_orchestrator_image_ships_the_web_page(tmp_path: Path) -> None:
    static = REPO / "orchestrator" / "static"
    if not (static / "index.html").is_file():
        pytest.skip("orchestrator/static is not built (make web)")
    pytest.importorskip("setuptools", reason="building the wheel offline needs setuptools in the venv")
    # Build the wheel from what the Dockerfile copies, as its `pip install .` does.
    context = tmp_path / "context"
    context.mkdir()
    for src in Dockerfile.read(REPO / "orchestrator" / "Dockerfile").copied:
        if (REPO / src).is_dir():
            shutil.copytree(REPO / src, context / src, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / src, context / src)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            ".",
        ],
        cwd=context,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    page = {p.relative_to(REPO).as_posix() for p in static.rglob("*") if p.is_file()}
    assert page <= shipped, f"the wheel lacks {sorted(page - shipped)}: pyproject.toml's package-data"


# --- compose.yaml ---

COMPOSE_FILE = REPO / "compose.yaml"
COMPOSE = yaml.safe_load(COMPOSE_FILE.read_text())
# What compose.yaml demands from the environment (or an .env file).
COMPOSE_ENV = {"ROAR_STAGE_KEY": "s" * 64, "ROAR_ADMIN_KEY": "a" * 64}


@pytest.mark.parametrize("profile", [None, "postgres"])
def test_compose_file_is_valid(profile: str | None, tmp_path: Path) -> None:
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.skip("needs Debian's docker-compose (make system-deps installs it)")
    command = [compose, "-f", str(COMPOSE_FILE), *(["--profile", profile] if profile else []), "config"]
    env = {"PATH": "/usr/bin:/bin", **COMPOSE_ENV}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)
    services = resolved["services"]
    assert {"separation", "transcription", "karaoke", "orchestrator"} <= set(services)
    # PostgreSQL runs only when asked for (compose v1's `config` lists it either way).
    assert services["postgres"]["profiles"] == ["postgres"]
    # Without the keys it refuses to start at all, rather than run servers that refuse every call.
    missing = subprocess.run(command, cwd=tmp_path, env={"PATH": env["PATH"]}, capture_output=True, text=True)
    assert missing.returncode != 0 and "ROAR_STAGE_KEY" in missing.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.parent.relative_to(REPO)))
def test_compose_builds_each_image_and_checks_its_served_port(path: Path) -> None:
    name = path.parent.name
    service = COMPOSE["services"][name]
    assert REPO / service["build"]["dockerfile"] == path
    assert service["image"] == _container(DEPLOYMENTS[name])["image"]
    port = Dockerfile.read(path).served_port({})
    assert service["healthcheck"]["test"] == ["CMD", "python", "-m", "roar.healthcheck", f"127.0.0.1:{port}"]


def test_compose_orchestrator_reaches_the_stages_by_their_service_names() -> None:
    orchestrator = COMPOSE["services"]["orchestrator"]
    for stage in ("separation", "transcription", "karaoke"):
        port = Dockerfile.read(REPO / "services" / stage / "Dockerfile").served_port({})
        assert orchestrator["environment"][f"ROAR_{stage.upper()}_ADDR"] == f"{stage}:{port}"
        assert orchestrator["depends_on"][stage] == {"condition": "service_healthy"}
    for name, service in COMPOSE["services"].items():
        unknown = {n for n in service.get("environment", {}) if n.startswith("ROAR_")} - SETTINGS_READ
        assert not unknown, f"compose.yaml's {name} sets {unknown}, which roar/config.py does not read"


def test_healthcheck_exits_0_only_for_a_serving_server() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        address = f"127.0.0.1:{port}"
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert healthcheck.main([address]) == 1  # e.g. a model service still loading its model
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        assert healthcheck.main([address]) == 0
    finally:
        server.stop(None)
    assert healthcheck.main([address]) == 1  # nothing listens there now
    assert healthcheck.main([]) == 2


# --- autoscaling and disruption budgets ---

AUTOSCALERS = _named("HorizontalPodAutoscaler")
BUDGETS = _named("PodDisruptionBudget")
KEDA_EXAMPLE = KUBE_DIR / "examples" / "keda-scaledobject.yaml"


def _selected_deployment(selector: dict[str, str]) -> str:
    (name,) = (n for n, d in DEPLOYMENTS.items() if selector.items() <= _pod_labels(d).items())
    return name


def _pod_volumes(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    return deployment["spec"]["template"]["spec"]["volumes"]


def _pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"]["labels"]


@pytest.mark.parametrize("name", sorted(AUTOSCALERS))
def test_autoscaler_scales_a_stage_on_cpu_it_requests(name: str) -> None:
    spec = AUTOSCALERS[name]["spec"]
    target = spec["scaleTargetRef"]
    assert target["kind"] == "Deployment" and target["name"] in DEPLOYMENTS
    assert "orchestrator" not in target["name"], "orchestrators scale by hand: each holds upload streams"
    # Utilization is a share of the request: without one the autoscaler never acts.
    assert _container(DEPLOYMENTS[target["name"]])["resources"]["requests"]["cpu"]
    assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]


def test_every_deployment_has_a_budget_that_still_lets_a_node_drain() -> None:
    budgeted = {_selected_deployment(b["spec"]["selector"]["matchLabels"]): b for b in BUDGETS.values()}
    assert set(budgeted) == set(DEPLOYMENTS)
    for name, budget in budgeted.items():
        autoscaler = AUTOSCALERS.get(name)
        fewest = autoscaler["spec"]["minReplicas"] if autoscaler else DEPLOYMENTS[name]["spec"]["replicas"]
        # minAvailable equal to the replicas would block every voluntary eviction forever.
        assert budget["spec"]["minAvailable"] < fewest, name


def test_keda_example_scales_a_deployment_here_on_a_metric_roar_exports() -> None:
    (scaled,) = yaml.safe_load_all(KEDA_EXAMPLE.read_text())
    assert scaled["kind"] == "ScaledObject" and scaled["metadata"]["namespace"] == NAMESPACE
    assert scaled["spec"]["scaleTargetRef"]["name"] in DEPLOYMENTS
    assert scaled["spec"]["scaleTargetRef"]["name"] in AUTOSCALERS, "the example replaces that HPA"
    exported = set(re.findall(r'"(roar_[a-z_]+)"', (REPO / "roar" / "metrics.py").read_text()))
    for trigger in scaled["spec"]["triggers"]:
        assert trigger["type"] == "prometheus"
        queried = set(re.findall(r"roar_[a-z_]+", trigger["metadata"]["query"]))
        assert queried and queried <= exported, f"the query asks for {queried - exported}, not exported"
