"""Only the replica whose model runs on torch loads it: the Api, the UI and the Gallery read the models'
answers as plain data (backend/models/analysis.py), and the Summarizer's encoder runs on ONNX Runtime, its
export made in a child process (issue 21, P7)."""

import os

import httpx
import pytest

from bench.stats import sample_processes, tree_pids
from tests.conftest import PHOTOS

pytestmark = pytest.mark.serve
TORCH_DEPLOYMENTS = {"Vision"}


def test_only_the_vision_replicas_load_torch(serve_app):
    with httpx.Client(base_url=serve_app, timeout=120) as client:
        # An answer of each model through each face first: the Api and the UI unpickle analyses, matches
        # and summaries, and the Gallery its analyses.
        data = PHOTOS["dog"].read_bytes()
        assert client.post("/api/v1/photos", files={"file": ("dog.jpg", data, "image/jpeg")}).json()["is_dog"]
        assert client.post("/api/v1/summarize", json={"text": "One sentence. And another."}).status_code == 200
        uploaded = client.post("/ui/gradio_api/upload", files={"files": ("dog.jpg", data, "image/jpeg")}).json()[0]
        photo = {"path": uploaded, "orig_name": "dog.jpg", "meta": {"_type": "gradio.FileData"}}
        found = client.post("/ui/gradio_api/run/find", json={"data": [photo, "", 3, False]})
        assert found.status_code == 200 and "malamute" in found.text.lower(), found.text[:300]
    replicas = [p for p in sample_processes(tree_pids(os.getpid())) if p.title.startswith("ray::ServeReplica:")]
    roles = {p.role for p in replicas}
    assert {"Api", "GradioUI", "Gallery", "Summarizer", "Vision"} <= roles, roles
    with_torch = {p.role for p in replicas if p.torch}
    assert with_torch == TORCH_DEPLOYMENTS, f"torch is loaded in {sorted(with_torch)}"
