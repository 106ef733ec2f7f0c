"""The Dockerfile, checked without a Docker engine: lint rules, and a replay of the serving image's
install and entrypoint steps in a fresh virtual environment."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from serving.process import free_port, running_server
from tests.conftest import PROJECT_ROOT

DOCKERFILE = PROJECT_ROOT / "Dockerfile"
SERVE_REQUIREMENTS = PROJECT_ROOT / "requirements" / "serve.txt"
SECRET_NAME = re.compile(r"(SECRET|PASSWORD|PASSWD|TOKEN|API_KEY|PRIVATE)", re.IGNORECASE)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "") for line in joined.splitlines() if line.strip()]


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
        [uv(), "export", "--locked", "--no-dev", "--extra", "serve", "--no-emit-project", "--format", "requirements-txt"],
        capture_output=True, text=True, check=True, cwd=PROJECT_ROOT,
    ).stdout
    pins = lambda text: sorted(line for line in text.splitlines() if "==" in line and not line.startswith("#"))  # noqa: E731
    assert pins(SERVE_REQUIREMENTS.read_text()) == pins(exported), "requirements/serve.txt is stale: re-run uv export"
    names = {line.split("==")[0].lower() for line in pins(exported)}
    assert not {name for name in names if name in {"torch", "torchvision", "lightning", "triton"} or name.startswith("nvidia-cu")}


def test_compose_serves_the_champion_from_a_postgres_backed_mlflow():
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())["services"]
    assert compose["postgres"]["image"].startswith("postgres:16.")
    assert "postgresql://" in " ".join(compose["mlflow"]["command"]) and "--serve-artifacts" in compose["mlflow"]["command"]
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
    assert services["train"]["build"]["target"] == "train" and services["train"]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert services["anomaly"]["environment"]["ANOMALY_API_KEY"].startswith("${ANOMALY_API_KEY:?")  # compose refuses to start without


def replay_copy(arguments: str, app: Path) -> None:
    """COPY into WORKDIR (/app) becomes a copy into `app`; absolute destinations (the model) are mounted instead."""
    *sources, destination = [word for word in arguments.split() if not word.startswith("--")]
    if destination.startswith("/"):
        return
    for source in sources:
        origin = PROJECT_ROOT / source
        target = app / destination / origin.name if destination.endswith("/") else app / destination
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if origin.is_dir() else shutil.copyfile)(origin, target)


@pytest.mark.slow
def test_replayed_serving_image_answers_readyz_and_score(published_model, tmp_path):
    """The serve stage's COPY and `uv pip install` steps, then its ENTRYPOINT, in a fresh venv."""
    serve = stages(DOCKERFILE.read_text())["serve"]
    app = tmp_path / "app"
    app.mkdir()
    venv = tmp_path / "venv"
    subprocess.run([uv(), "venv", "--python", sys.executable, str(venv)], check=True, capture_output=True)
    env = {**os.environ, "VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}{os.pathsep}{Path(uv()).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    for instruction, arguments in serve:
        if instruction == "COPY":
            replay_copy(arguments, app)
        if instruction == "RUN" and arguments.startswith("uv pip install"):
            result = subprocess.run(arguments, shell=True, cwd=app, env=env, capture_output=True, text=True, timeout=600)
            assert result.returncode == 0, result.stderr[-2000:]
    python = venv / "bin" / "python"
    assert subprocess.run([str(python), "-c", "import torch"], capture_output=True, cwd=tmp_path).returncode != 0
    entrypoint = json.loads(dict(serve)["ENTRYPOINT"])
    port = free_port()
    command = [str(venv / "bin" / entrypoint[0]), *entrypoint[1:], "--host", "127.0.0.1"]
    image_env = {"PORT": str(port), "ANOMALY_MODEL": str(published_model.directory), "PATH": env["PATH"], "VIRTUAL_ENV": str(venv)}
    with running_server(command, image_env, port, tmp_path / "serve.log") as url:
        image = sorted((published_model.data / "test" / "scratch").glob("*.png"))[0]
        response = httpx.post(f"{url}/score", files={"image": image.open("rb")}, timeout=60)
        assert response.status_code == 200, response.text
        assert response.json()["model"]["model_checksum"] == httpx.get(f"{url}/model").json()["model"]["model_checksum"]
