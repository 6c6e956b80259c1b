"""Training a head on Ray, tracking it in MLflow, and swapping it into the running app without a failed
request: `retriever train` run as a user runs it, against the app's own registry."""

import re
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from backend.models.registry import CHAMPION, MODEL_NAME, PACKAGED_TAG, Registry
from tests.conftest import PHOTOS, ROOT, with_vision_config
from tests.labelled_folder import CLASSES, build_labelled_folder

pytestmark = pytest.mark.serve


class RequestStream:
    """Posts a dog photo to the API back to back from a thread; keeps every answer's status and model."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: list[tuple[int, str, dict]] = []  # (status, model, probabilities)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        photo = PHOTOS["dog"].read_bytes()
        with httpx.Client(timeout=60) as client:
            while not self.stopped.is_set():
                try:
                    response = client.post(
                        f"{self.url}/api/v1/photos", files={"file": ("dog.jpg", photo, "image/jpeg")}
                    )
                    body = response.json() if response.status_code == 200 else {}
                    self.answers.append((response.status_code, body.get("model", ""), body.get("probabilities", {})))
                except httpx.HTTPError as exc:
                    self.answers.append((0, repr(exc), {}))

    def __enter__(self) -> "RequestStream":
        self.thread.start()
        return self

    def __exit__(self, *_) -> None:
        self.stopped.set()
        self.thread.join(timeout=120)

    def wait_for_model(self, model: str, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(answer[1] == model for answer in self.answers[-3:]):
            assert time.monotonic() < deadline, f"still answering with {Counter(a[1] for a in self.answers)}"
            time.sleep(0.2)
        # Then a few more answers from it, so the stream covers the time after the swap too.
        seen = len(self.answers)
        while len(self.answers) < seen + 5:
            time.sleep(0.1)

    def models_since(self, model: str) -> set[str]:
        """Which models answered from the first answer of `model` on."""
        models = [answer[1] for answer in self.answers]
        return set(models[models.index(model) :])

    def failures(self) -> list[tuple[int, str]]:
        return [(status, model) for status, model, _ in self.answers if status != 200]


@pytest.fixture(scope="module")
def registry(serve_app) -> Registry:
    return Registry()  # the app's: the test run's data dir (tests/conftest.py)


@dataclass
class Trained:
    done: subprocess.CompletedProcess
    stream: RequestStream
    before: str  # the version the alias pointed at before training ("1" on a fresh registry)
    version: str  # the version training registered


@pytest.fixture(scope="module")
def trained(serve_app, registry, tmp_path_factory):
    """`retriever train <folder> --alias champion` while requests stream in; points the alias back where
    it was afterwards (the other tests expect ImageNet breeds). Version numbers are read, never assumed:
    the registry may hold versions from before."""
    folder = build_labelled_folder(tmp_path_factory.mktemp("photos") / "three-classes")
    (folder / "unsorted.jpg").write_bytes(PHOTOS["dog"].read_bytes())
    before = registry.client.get_registered_model(MODEL_NAME).aliases[CHAMPION]
    retriever = Path(sys.executable).parent / "retriever"
    try:
        with RequestStream(serve_app) as stream:
            stream.wait_for_model(f"{MODEL_NAME}/{before}")
            done = subprocess.run(
                [str(retriever), "train", str(folder), "--alias", CHAMPION, "--max-epochs", "40"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
            version = re.search(rf"Registered {MODEL_NAME} version (\d+)", done.stdout).group(1)
            stream.wait_for_model(f"{MODEL_NAME}/{version}")
        yield Trained(done, stream, before, version)
    finally:
        registry.set_alias(MODEL_NAME, CHAMPION, before)


def test_training_registers_a_version_and_moves_the_alias(trained, registry):
    assert int(trained.version) > int(trained.before)
    assert "Skipped unsorted.jpg: not in a breed folder" in trained.done.stdout
    # The command's own lines say it: MLflow's steps and Ray Data's notices are kept off the terminal.
    printed = trained.done.stdout + trained.done.stderr
    assert not re.search(r"INFO mlflow|Created version|Successfully registered|Progress bars disabled", printed)
    version = registry.client.get_model_version(MODEL_NAME, trained.version)
    assert CHAMPION in version.aliases
    assert sorted(registry.card(f"models:/{MODEL_NAME}/{trained.version}").labels) == sorted(CLASSES)
    # The packaged model is registered once, however often the app started.
    versions = registry.client.search_model_versions(f"name = '{MODEL_NAME}'")
    assert len([v for v in versions if PACKAGED_TAG in v.tags]) == 1


def test_the_run_has_params_and_per_epoch_metrics(trained, registry):
    version = registry.client.get_model_version(MODEL_NAME, trained.version)
    run = registry.client.get_run(version.run_id)
    assert run.info.status == "FINISHED"
    photos = sum(len(photos) for photos in CLASSES.values())
    assert run.data.params["classes"] == str(len(CLASSES))
    assert run.data.params["train_photos"] == str(photos - len(CLASSES))  # one photo of each class validates
    history = registry.client.get_metric_history(run.info.run_id, "val_macro_f1")
    epochs = int(run.data.params["max_epochs"])
    assert 1 <= len(history) <= epochs and [m.step for m in history] == list(range(1, len(history) + 1))
    for name in ("train_loss", "val_loss", "val_accuracy"):
        assert len(registry.client.get_metric_history(run.info.run_id, name)) == len(history)
    # Validated on photos it never saw (another dog, another cheetah, another horse): all told apart.
    assert run.data.metrics["best_val_macro_f1"] == 1.0
    assert registry.best_run(MODEL_NAME) == run.info.run_id  # the tutorial's "best run by val_loss"


def test_the_live_app_switched_to_the_new_labels_without_a_failed_request(trained, serve_app):
    stream, new = trained.stream, f"{MODEL_NAME}/{trained.version}"
    assert stream.failures() == []
    models = [model for _, model, _ in stream.answers]
    assert models[0] == f"{MODEL_NAME}/{trained.before}" and models[-1] == new
    # Once switched, it stays switched: no replica answers with the old model after the new one.
    assert stream.models_since(new) == {new}
    _, _, probabilities = stream.answers[-1]
    assert set(probabilities) == set(CLASSES)
    assert next(iter(probabilities)) == "dog"  # the photo the stream sends


def test_a_user_config_swap_is_live_too(trained, serve_deployment):
    """`serve deploy` with another model in the Vision user_config: reconfigure, no restart, no errors."""
    running, config = serve_deployment
    old, new = f"{MODEL_NAME}/{trained.before}", f"{MODEL_NAME}/{trained.version}"
    pinned = with_vision_config(config, model=f"models:/{old}")
    try:
        with RequestStream(running.url) as stream:
            stream.wait_for_model(new)
            status = httpx.get(f"{running.url}/api/v1/ready", timeout=30).json()
            running.deploy(pinned)
            stream.wait_for_model(old)
        assert stream.failures() == []
        assert stream.models_since(old) == {old}  # the alias follower did not undo it
        assert set(stream.answers[-1][2]) > {"Siberian husky", "malamute"}  # ImageNet's breeds again
        ready = httpx.get(f"{running.url}/api/v1/ready", timeout=30).json()
        assert ready["deployments"]["Vision"]["model"] == old
        assert status["deployments"]["Vision"]["model"] == new
    finally:
        running.deploy(config)  # back to following the alias


def test_a_swap_to_a_model_that_is_not_there_is_refused_and_the_old_one_keeps_answering(trained, serve_deployment):
    running, config = serve_deployment
    absent = f"models:/{MODEL_NAME}/{int(trained.version) + 100}"
    missing = with_vision_config(config, model=absent)
    serving = httpx.get(f"{running.url}/api/v1/ready", timeout=30).json()["deployments"]["Vision"]["model"]
    try:
        with RequestStream(running.url) as stream:
            running.deploy(missing)
            deadline = time.monotonic() + 60
            while "did not switch" not in (
                httpx.get(f"{running.url}/api/v1/ready", timeout=30).json()["deployments"]["Vision"]["detail"] or ""
            ):
                assert time.monotonic() < deadline
                time.sleep(0.5)
            stream.wait_for_model(serving)
        ready = httpx.get(f"{running.url}/api/v1/ready", timeout=30).json()
        assert ready["ready"] is True
        assert ready["deployments"]["Vision"]["model"] == serving
        assert absent in ready["deployments"]["Vision"]["detail"]
        assert stream.failures() == [] and stream.models_since(serving) == {serving}
    finally:
        running.deploy(config)
