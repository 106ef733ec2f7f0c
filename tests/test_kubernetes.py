"""deploy/kubernetes: every manifest validates offline against the Kubernetes schema, and what it says about the
service (port, probes, settings, CPU against ONNX Runtime threads, the training arguments) is what the service and
the images actually do."""

from __future__ import annotations

import re

import kubernetes_validate
import pytest
import yaml

from anomaly.config import load_config
from serving.guard import OPEN_PATHS
from serving.settings import ServingSettings
from tests.conftest import PROJECT_ROOT

MANIFESTS = PROJECT_ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.33"


def documents() -> list[dict]:
    return [
        doc
        for path in sorted(MANIFESTS.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def resource(kind: str, name: str) -> dict:
    (found,) = [doc for doc in documents() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    return found


def cpus(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


@pytest.mark.parametrize("document", documents(), ids=lambda doc: f"{doc['kind']}/{doc['metadata']['name']}")
def test_manifest_validates_against_the_kubernetes_schema(document):
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest():
    listed = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(path.name for path in MANIFESTS.glob("*.yaml") if path.name != "kustomization.yaml")


def test_serving_pods_match_the_service_and_its_image():
    deployment = resource("Deployment", "anomaly")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item for item in container["env"]}
    (port,) = container["ports"]
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text().split(" AS serve\n", 1)[1]  # the serving stage
    assert port["containerPort"] == int(env["PORT"]["value"]) == int(re.search(r"EXPOSE (\d+)", dockerfile).group(1))
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == port["name"]
        assert container[probe]["httpGet"]["path"] in OPEN_PATHS  # answered without the API key
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(
        re.search(r"--uid (\d+) anomaly", dockerfile).group(1)
    )
    service = resource("Service", "anomaly")
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert env["ANOMALY_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "anomaly-api-key"

    config = resource("ConfigMap", "anomaly-config")["data"]
    assert [ref["configMapRef"]["name"] for ref in container["envFrom"]] == ["anomaly-config"]
    settings = ServingSettings.from_env(
        {**config, "ANOMALY_API_KEY": "from the secret"}
    )  # every ANOMALY_ key is a setting
    known = {f"ANOMALY_{name.upper()}" for name in ServingSettings.model_fields}
    assert {key for key in config if key.startswith("ANOMALY_")} <= known
    resources = container["resources"]
    assert (
        cpus(resources["requests"]["cpu"])
        == cpus(resources["limits"]["cpu"])
        == settings.ort_threads * settings.model_workers
    )

    mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
    assert config["ANOMALY_MODEL"].startswith(mounts["models"]["mountPath"] + "/") and mounts["models"]["readOnly"]
    autoscaler = resource("HorizontalPodAutoscaler", "anomaly")
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]


def test_training_job_arguments_load_as_a_pipeline_config():
    job = resource("Job", "anomaly-train")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    arguments = container["args"]
    config_path = arguments[arguments.index("--config") + 1]
    overrides = [arguments[i + 1] for i, argument in enumerate(arguments) if argument == "--set"]
    config = load_config(PROJECT_ROOT / config_path, overrides)
    data_mount = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}["data"]
    assert str(config.data.root) == data_mount and config.tracking.registered_model == "anomaly"
    claims = {
        volume["persistentVolumeClaim"]["claimName"]
        for volume in job["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in volume
    }
    assert claims <= {doc["metadata"]["name"] for doc in documents() if doc["kind"] == "PersistentVolumeClaim"}
