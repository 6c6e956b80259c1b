"""A KubeRay RayService for a Serve config: the same applications, on a head pod and worker pods that all
read the cluster settings (the gallery's database, the MLflow tracking server, the API keys, Ray's
token) from one Secret, the way the nodes of a `ray start` cluster read them from their environment
(docs/scale-out.md).

Closed to strangers: the API asks for keys (its proxy listens on the pod network), and every Ray port,
the Serve replicas' gRPC servers among them (which listen on all interfaces), asks for the cluster's
token (`RAY_AUTH_MODE=token`). With a TLS Secret, Ray's traffic between pods is encrypted as well."""

from __future__ import annotations

import copy
import secrets
from typing import Any

import yaml

from backend.api.auth import KEYS_ENV
from backend.data import GALLERY_URL_ENV
from retriever.local import LOCAL_ENV

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
SERVE_PORT = 8000  # KubeRay's Serve service points at the head pod's port 8000
# What every Ray process of the cluster needs, the Serve proxy included (it does not get the
# applications' runtime_env); LOCAL_ENV's RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER is for a one-machine cluster.
# Its RAY_AUTH_MODE=token has every Ray port ask for RAY_AUTH_TOKEN (from the Secret).
NODE_ENV = {key: value for key, value in LOCAL_ENV.items() if key != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
TLS_DIR = "/etc/ray/tls"  # where a kubernetes.io/tls Secret (ca.crt, tls.crt, tls.key) is mounted
TLS_ENV = {
    "RAY_USE_TLS": "1",
    "RAY_TLS_SERVER_CERT": f"{TLS_DIR}/tls.crt",
    "RAY_TLS_SERVER_KEY": f"{TLS_DIR}/tls.key",
    "RAY_TLS_CA_CERT": f"{TLS_DIR}/ca.crt",
}


def rayservice_manifest(
    serve_config: dict[str, Any],
    *,
    name: str,
    image: str,
    gallery_url: str,
    tracking_uri: str,
    workers: int,
    cpus: int,
    memory: str,
    api_keys: str | None = None,
    ray_token: str | None = None,
    tls_secret: str | None = None,
) -> list[dict[str, Any]]:
    """The Secret with the cluster settings and the RayService (apply both: `kubectl apply -f`).
    `api_keys`: RETRIEVER_API_KEYS for the Api replicas (None: the API is open); `ray_token`: the
    cluster's Ray token (None: a new random one); `tls_secret`: a kubernetes.io/tls Secret with ca.crt
    for Ray's TLS between pods (None: no TLS)."""
    config = copy.deepcopy(serve_config)
    # The proxy on the head pod must accept the Kubernetes Service, not only the pod's loopback.
    config["http_options"] = {**config.get("http_options", {}), "host": "0.0.0.0", "port": SERVE_PORT}
    settings = f"{name}-cluster"
    resources = {"limits": {"cpu": str(cpus), "memory": memory}, "requests": {"cpu": str(cpus), "memory": memory}}

    node_env = {**NODE_ENV, **(TLS_ENV if tls_secret else {})}

    def pod(container_name: str, ports: list[dict[str, Any]], init: bool) -> dict[str, Any]:
        container = {
            "name": container_name,
            "image": image,
            "env": [{"name": key, "value": value} for key, value in node_env.items()],
            "envFrom": [{"secretRef": {"name": settings}}],
            "resources": resources,
        }
        if ports:
            container["ports"] = ports
        spec: dict[str, Any] = {"containers": [container]}
        if tls_secret:
            container["volumeMounts"] = [{"name": "ray-tls", "mountPath": TLS_DIR, "readOnly": True}]
            spec["volumes"] = [{"name": "ray-tls", "secret": {"secretName": tls_secret}}]
        if init:
            # Registers the packaged breed model in the tracking server before the head starts (once:
            # `retriever prepare` does nothing when it is there), so the Vision replicas only load it.
            spec["initContainers"] = [
                {
                    "name": "prepare",
                    "image": image,
                    "command": ["retriever", "prepare", "--config", "serve_config.yaml"],
                    "env": container["env"],
                    "envFrom": container["envFrom"],
                    **({"volumeMounts": container["volumeMounts"]} if tls_secret else {}),
                }
            ]
        return {"spec": spec}

    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": settings},
            "type": "Opaque",
            "stringData": {
                GALLERY_URL_ENV: gallery_url,
                TRACKING_URI_ENV: tracking_uri,
                "RAY_AUTH_TOKEN": ray_token or secrets.token_hex(32),
                **({KEYS_ENV: api_keys} if api_keys else {}),
            },
        },
        {
            "apiVersion": "ray.io/v1",
            "kind": "RayService",
            "metadata": {"name": name},
            "spec": {
                "serveConfigV2": yaml.dump(config, Dumper=_ReadableDumper, sort_keys=False),
                "rayClusterConfig": {
                    "headGroupSpec": {
                        "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": str(cpus)},
                        "template": pod(
                            "ray-head",
                            [
                                {"containerPort": 6379, "name": "gcs"},
                                {"containerPort": 8265, "name": "dashboard"},
                                {"containerPort": SERVE_PORT, "name": "serve"},
                            ],
                            init=True,
                        ),
                    },
                    "workerGroupSpecs": [
                        {
                            "groupName": "workers",
                            "replicas": workers,
                            "minReplicas": workers,
                            "maxReplicas": workers,
                            "rayStartParams": {"num-cpus": str(cpus)},
                            "template": pod("ray-worker", [], init=False),
                        }
                    ],
                },
            },
        },
    ]


def dump(manifest: list[dict[str, Any]]) -> str:
    """The manifest as `kubectl apply -f` reads it: one YAML document each, the Serve config a block."""
    return yaml.dump_all(manifest, Dumper=_ReadableDumper, sort_keys=False)


class _ReadableDumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks; the config's shared parts written out, not as &anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


_ReadableDumper.add_representer(
    str,
    lambda dumper, text: dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None),
)
