"""`retriever rayservice`: the KubeRay manifest deploys serve_config.yaml as it is (only the proxy opened to
the pod network), and every pod reads the cluster settings from one Secret, under the names the app
reads. (No Kubernetes here: what KubeRay does with the manifest is not tested.)"""

from __future__ import annotations

import yaml
from ray.serve.schema import ServeDeploySchema
from typer.testing import CliRunner

from backend.data import default_gallery_url, default_tracking_uri
from retriever.cli import cli
from tests.conftest import ROOT

GALLERY_URL = "postgresql+psycopg://retriever:secret@postgres.db.svc:5432/retriever"
TRACKING_URI = "http://mlflow.ml.svc:5000"


KEYS = "ops=s3cr3t-ops:read+write"


def rayservice(*options: str) -> list[dict]:
    command = ["rayservice", "--image", "registry.example.org/retriever:1", "--api-keys", KEYS, *options]
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 0, result.output
    return list(yaml.safe_load_all(result.output))


def test_the_manifest_deploys_the_serve_config_unchanged_with_the_settings_in_one_secret(monkeypatch):
    secret, service = rayservice("--gallery-url", GALLERY_URL, "--tracking-uri", TRACKING_URI, "--workers", "3")
    assert (secret["kind"], service["kind"]) == ("Secret", "RayService")

    deployed = yaml.safe_load(service["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(deployed)
    ours = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    assert deployed["http_options"] == {**ours["http_options"], "host": "0.0.0.0", "port": 8000}
    assert {k: v for k, v in deployed.items() if k != "http_options"} == {
        k: v for k, v in ours.items() if k != "http_options"
    }

    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["workerGroupSpecs"][0]["replicas"] == 3
    head = cluster["headGroupSpec"]["template"]["spec"]
    pods = [
        *head["initContainers"],
        *head["containers"],
        *cluster["workerGroupSpecs"][0]["template"]["spec"]["containers"],
    ]
    assert all(c["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}] for c in pods)
    assert head["initContainers"][0]["command"][:2] == ["retriever", "prepare"]

    # The Secret's names are the ones the app reads: a pod with them set uses the shared stores.
    for name, value in secret["stringData"].items():
        monkeypatch.setenv(name, value)
    assert (default_gallery_url(), default_tracking_uri()) == (GALLERY_URL, TRACKING_URI)


def test_the_cluster_is_closed_to_strangers_api_keys_ray_token_and_optional_tls(monkeypatch):
    secret, service = rayservice(
        "--gallery-url", GALLERY_URL, "--tracking-uri", TRACKING_URI, "--tls-secret", "ray-tls"
    )
    assert secret["stringData"]["RETRIEVER_API_KEYS"] == KEYS
    token = secret["stringData"]["RAY_AUTH_TOKEN"]
    assert (
        len(token) == 64
        and token
        != rayservice("--gallery-url", GALLERY_URL, "--tracking-uri", TRACKING_URI)[0]["stringData"]["RAY_AUTH_TOKEN"]
    )  # a new one each time unless given
    cluster = service["spec"]["rayClusterConfig"]
    head = cluster["headGroupSpec"]["template"]["spec"]
    worker = cluster["workerGroupSpecs"][0]["template"]["spec"]
    for spec in (head, worker):
        env = {item["name"]: item["value"] for item in spec["containers"][0]["env"]}
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_USE_TLS"] == "1"
        assert env["RAY_TLS_CA_CERT"] == "/etc/ray/tls/ca.crt"
        assert spec["volumes"] == [{"name": "ray-tls", "secret": {"secretName": "ray-tls"}}]
        assert spec["containers"][0]["volumeMounts"][0]["mountPath"] == "/etc/ray/tls"


def test_an_open_api_on_the_pod_network_must_be_asked_for():
    base = ["rayservice", "--image", "x", "--gallery-url", GALLERY_URL, "--tracking-uri", TRACKING_URI]
    refused = CliRunner().invoke(cli, base, env={"RETRIEVER_API_KEYS": ""})
    assert refused.exit_code == 2 and "No API keys" in refused.output
    opened = CliRunner().invoke(cli, [*base, "--open-api"], env={"RETRIEVER_API_KEYS": ""})
    assert opened.exit_code == 0 and "RETRIEVER_API_KEYS" not in opened.output
    bad = CliRunner().invoke(cli, [*base, "--api-keys", "ops=hunter2:root"])
    assert bad.exit_code == 2 and "unknown scope" in bad.output and "hunter2" not in bad.output


def test_missing_settings_are_refused():
    result = CliRunner().invoke(cli, ["rayservice", "--image", "x", "--tracking-uri", TRACKING_URI])
    assert result.exit_code == 2
    assert "--gallery-url" in result.output
