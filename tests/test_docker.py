"""The Dockerfile, checked without a Docker engine: lint rules, and a replay of the serving image's environment,
install, entrypoint and health-check steps in a fresh virtual environment, serving the shipped model kind."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from serving.process import free_port, running_server
from tests.conftest import PROJECT_ROOT, run_cli_process

DOCKERFILE = PROJECT_ROOT / "Dockerfile"
SERVE_REQUIREMENTS = PROJECT_ROOT / "requirements" / "serve.txt"
# What a build's RUN steps take from the machine that builds: how it reaches the package index (proxies, CA
# certificates, uv and pip settings). The image's own ENV is all that the served container gets.
BUILD_NETWORK = re.compile(r"PROXY|SSL|CERT|CA_BUNDLE|^UV_|^PIP_", re.IGNORECASE)
SECRET_NAME = re.compile(r"(SECRET|PASSWORD|PASSWD|TOKEN|API_KEY|PRIVATE)", re.IGNORECASE)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
        for line in joined.splitlines()
        if line.strip()
    ]


def stages(text: str) -> dict[str, list[tuple[str, str]]]:
    found: dict[str, list[tuple[str, str]]] = {}
    current = None
    for instruction, arguments in instructions(text):
        if instruction == "FROM":
            current = arguments.split()[-1] if " AS " in arguments.upper() else f"stage{len(found)}"
            found[current] = []
        if current is not None:
            found[current].append((instruction, arguments))
    return found


def uv() -> str:
    return shutil.which("uv") or str(Path(sys.executable).with_name("uv"))


def test_dockerfile_lint():
    text = DOCKERFILE.read_text()
    all_stages = stages(text)
    assert list(all_stages)[-1] == "serve", "the default (last) target must be the serving image"
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE).group(1)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base), f"base image not pinned to a slim version: {base}"
    for name, body in all_stages.items():
        assert body[0][1].split()[0] == "${PYTHON_IMAGE}", name
        users = [arguments for instruction, arguments in body if instruction == "USER"]
        assert users and users[-1] not in ("root", "0"), f"stage {name} must end as a non-root user"
        for instruction, arguments in body:
            if instruction in ("ENV", "ARG"):
                for key, value in re.findall(r"(\w+)=(\S*)", arguments):
                    assert not (SECRET_NAME.search(key) and value), f"{name}: {key} holds a secret in the image"
    serve = dict((instruction, arguments) for instruction, arguments in all_stages["serve"])
    assert "/readyz" in serve["HEALTHCHECK"] and "PORT" in serve["HEALTHCHECK"]
    assert "torch" not in " ".join(arguments for _, arguments in all_stages["serve"])


def test_serving_requirements_match_the_lock_and_hold_no_torch():
    exported = subprocess.run(
        [
            uv(),
            "export",
            "--locked",
            "--no-dev",
            "--extra",
            "serve",
            "--no-emit-project",
            "--format",
            "requirements-txt",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=PROJECT_ROOT,
    ).stdout
    pins = lambda text: sorted(line for line in text.splitlines() if "==" in line and not line.startswith("#"))  # noqa: E731
    assert pins(SERVE_REQUIREMENTS.read_text()) == pins(exported), "requirements/serve.txt is stale: re-run uv export"
    names = {line.split("==")[0].lower() for line in pins(exported)}
    assert not {
        name
        for name in names
        if name in {"torch", "torchvision", "lightning", "triton"} or name.startswith("nvidia-cu")
    }


def test_compose_serves_the_champion_from_a_postgres_backed_mlflow():
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())["services"]
    assert compose["postgres"]["image"].startswith("postgres:16.")
    assert (
        "postgresql://" in " ".join(compose["mlflow"]["command"])
        and "--serve-artifacts" in compose["mlflow"]["command"]
    )
    assert compose["anomaly"]["environment"]["ANOMALY_MODEL"].endswith("@champion")
    assert compose["anomaly"]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert compose["anomaly"]["build"]["target"] == "serve"


def test_compose_publishes_only_the_service_and_needs_an_api_key():
    """Whoever reaches MLflow can move the champion alias: PostgreSQL and MLflow stay on an internal network."""
    document = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    services = document["services"]
    assert {name for name, service in services.items() if "ports" in service} == {"anomaly"}
    assert document["networks"]["private"] == {"internal": True}
    assert services["postgres"]["networks"] == ["private"] and services["mlflow"]["networks"] == ["private"]
    assert "private" in services["anomaly"]["networks"] and services["train"]["networks"] == ["private"]
    assert (
        services["train"]["build"]["target"] == "train"
        and services["train"]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    )
    assert services["anomaly"]["environment"]["ANOMALY_API_KEY"].startswith(
        "${ANOMALY_API_KEY:?"
    )  # compose refuses to start without


def in_image(path: str, root: Path) -> Path:
    """A path inside the image, as the same path under `root` (the image's / here)."""
    return root / path.lstrip("/")


def image_environment(stage: list[tuple[str, str]], root: Path, base_path: str) -> dict[str, str]:
    """The stage's ENV, in order, with the image's absolute paths moved under `root` and $PATH expanded."""
    env = {"PATH": base_path, "HOME": str(in_image("/home/anomaly", root))}
    for instruction, arguments in stage:
        if instruction != "ENV":
            continue
        for assignment in shlex.split(arguments):
            name, _, value = assignment.partition("=")
            parts = value.split(":")
            mapped = [
                env["PATH"] if part == "$PATH" else str(in_image(part, root)) if part.startswith("/") else part
                for part in parts
            ]
            env[name] = ":".join(mapped)
    return env


def replay_copy(arguments: str, app: Path, root: Path, build_args: dict[str, str]) -> None:
    """COPY into WORKDIR (`app`) or to an absolute path (under `root`), with ${ARG}s from `build_args`."""
    words = [word for word in arguments.split() if not word.startswith("--")]
    *sources, destination = [re.sub(r"\$\{(\w+)\}", lambda match: build_args[match.group(1)], word) for word in words]
    for source in sources:
        origin = Path(source) if Path(source).is_absolute() else PROJECT_ROOT / source
        base = in_image(destination, root) if destination.startswith("/") else app / destination
        target = base / origin.name if destination.endswith("/") else base
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if origin.is_dir() else shutil.copyfile)(origin, target)


@pytest.mark.slow
def test_replayed_serving_image_serves_the_shipped_model_as_the_cli_scores_it(shipped, tmp_path):
    """The serve stage replayed as far as runs without an engine: its ENV (the image's paths under a scratch root,
    nothing inherited from this shell), a fresh venv, its COPY and `uv pip install` steps with the shipped model baked
    in as `--build-arg MODEL_DIR=...` does, then its ENTRYPOINT and its HEALTHCHECK."""
    serve = stages(DOCKERFILE.read_text())["serve"]
    root = tmp_path / "image"
    workdir = in_image(dict(serve)["WORKDIR"], root)
    workdir.mkdir(parents=True)
    env = image_environment(serve, root, f"{Path(uv()).parent}{os.pathsep}/usr/local/bin:/usr/bin:/bin")
    venv = Path(env["VIRTUAL_ENV"])
    for directory in (env["HOME"], in_image("/tmp", root)):  # what the base image and useradd provide
        Path(directory).mkdir(parents=True)
    subprocess.run([uv(), "venv", "--python", sys.executable, str(venv)], check=True, capture_output=True)
    build_args = {"MODEL_DIR": str(shipped.model)}
    build_env = {**env, **{name: value for name, value in os.environ.items() if BUILD_NETWORK.search(name)}}
    for instruction, arguments in serve:
        if instruction == "COPY":
            replay_copy(arguments, workdir, root, build_args)
        if instruction == "RUN" and arguments.startswith("uv pip install"):
            result = subprocess.run(
                arguments, shell=True, cwd=workdir, env=build_env, capture_output=True, text=True, timeout=600
            )
            assert result.returncode == 0, result.stderr[-2000:]
    assert subprocess.run([str(venv / "bin" / "python"), "-c", "import torch"], capture_output=True, env=env).returncode
    port = free_port()
    env["PORT"] = str(port)  # docker run -e PORT=...: the only variable set from outside
    entrypoint = json.loads(dict(serve)["ENTRYPOINT"])
    command = [str(venv / "bin" / entrypoint[0]), *entrypoint[1:], "--host", "127.0.0.1"]
    healthcheck = json.loads(dict(serve)["HEALTHCHECK"].split(" CMD ", 1)[1])
    assert healthcheck[0] == "python"
    image = shipped.images[0]
    with running_server(command, env, port, tmp_path / "serve.log", inherit_environment=False) as url:
        health = subprocess.run(
            [str(venv / "bin" / "python"), *healthcheck[1:]], env=env, capture_output=True, timeout=10
        )
        assert health.returncode == 0, health.stderr
        response = httpx.post(f"{url}/score", files={"image": image.open("rb")}, timeout=60)
        model = httpx.get(f"{url}/model").json()
    assert response.status_code == 200, response.text
    cli = run_cli_process("score", "--model", str(shipped.model), str(image))
    expected = json.loads(cli.stdout.splitlines()[0])
    for name in ("latent_distance", "reconstruction_score", "p_combined"):
        assert response.json()[name] == pytest.approx(expected[name], rel=1e-5, abs=1e-9), name
    assert model["reference"] == str(in_image("/models/default", root)) and (
        model["input"]["height"],
        model["input"]["width"],
    ) == (640, 256)
