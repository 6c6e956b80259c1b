"""Offline job: train a breed head on a labelled folder of photos, on Ray, tracked and registered in MLflow.

    <folder>/<breed>/<photo>      (the tutorial's layout; photos outside a breed folder are skipped)

1. Ray Data batch inference computes the backbone features of every photo once (EfficientNet-Lite0,
   the backbone every registered breed model shares, so the gallery's embeddings stay valid).
2. A stratified train/validation split.
3. Ray Train's TorchTrainer trains the tutorial's head (Linear-BatchNorm-ReLU-Dropout-Linear) on CPU,
   logging loss, accuracy and macro F1 per epoch to the MLflow run as it goes, and stops early after
   `patience` epochs without a better validation loss; it reports the best epoch's head as its checkpoint.
4. The best head joins the backbone in one `BreedNetwork`, logged with its model card and registered
   as a new version of the registered model; optionally an alias (the app serves `champion`) moves to it.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from backend.models.index import labelled_images
from backend.models.registry import BEST_RUN_METRIC, MODEL_NAME, ModelCard, Registry
from backend.models.vision import (
    BACKBONE,
    BACKBONE_INPUT,
    BreedNetwork,
    backbone_fingerprint,
    classification_head,
    load_backbone,
)
from shared.config import Limits
from shared.errors import InvalidImage
from shared.images import decode_image, to_model_input


class TrainingSettings(BaseModel):
    """Hyperparameters: logged as the run's params."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_epochs: int = Field(60, ge=1)
    patience: int = Field(8, ge=1, description="Epochs without a better validation loss before stopping.")
    batch_size: int = Field(32, ge=2)
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    hidden: int = Field(256, ge=1)
    dropout: float = Field(0.3, ge=0, lt=1)
    val_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 0


@dataclass
class TrainingReport:
    run_id: str
    version: int
    labels: list[str]
    epochs: int
    best_epoch: int
    metrics: dict[str, float]  # of the best epoch
    seconds_per_epoch: float
    skipped: dict[str, str]


class BackboneFeatures:
    """A Ray Data map_batches callable: photo paths in, backbone features out (once per photo)."""

    def __init__(self) -> None:
        self.network = BreedNetwork(load_backbone(), torch.nn.Identity()).eval()
        self.limits = Limits()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        pixels, errors = [], []
        for path in batch["path"]:
            try:
                pixels.append(to_model_input(decode_image(Path(path).read_bytes(), self.limits), BACKBONE_INPUT))
                errors.append("")
            except (InvalidImage, OSError) as exc:  # reported, the job goes on
                pixels.append(np.zeros((BACKBONE_INPUT.crop, BACKBONE_INPUT.crop, 3), np.uint8))
                errors.append(str(exc))
        with torch.inference_mode():
            features = self.network.features(torch.from_numpy(np.stack(pixels))).numpy()
        return {"path": list(batch["path"]), "label": list(batch["label"]), "features": list(features), "error": errors}


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation): `val_fraction` of each breed to validation, but at least one photo of
    every breed on each side (a plain stratified split can leave a rare breed out of validation)."""
    breeds, counts = np.unique(labels, return_counts=True)
    if len(breeds) < 2:
        raise ValueError("a breed model needs at least 2 breeds (one folder each)")
    if too_few := [str(b) for b, n in zip(breeds, counts) if n < 2]:
        raise ValueError(
            f"every breed needs at least 2 photos (one to train on, one to validate): {', '.join(too_few)}"
        )
    rng = np.random.default_rng(seed)
    train, val = [], []
    for breed in breeds:
        photos = rng.permutation(np.flatnonzero(labels == breed))
        n_val = min(len(photos) - 1, max(1, round(len(photos) * val_fraction)))
        val.extend(photos[:n_val])
        train.extend(photos[n_val:])
    return np.sort(train), np.sort(val)


def labelled_photos(folder: Path, settings: TrainingSettings) -> list[tuple[Path, str]]:
    """The folder's (photo, breed) pairs, or ValueError when they cannot make a model: checked before any
    Ray work (photos that turn out unreadable are checked again after)."""
    files = [(path, label) for path, label in labelled_images(folder) if label]
    if not files:
        raise ValueError(f"no labelled photos under {folder}: expected {folder}/<breed>/<photo>")
    stratified_split(np.array([label for _, label in files]), settings.val_fraction, settings.seed)
    return files


def epoch_metrics(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    from sklearn.metrics import f1_score

    predicted = logits.argmax(dim=1)
    return {
        "loss": float(torch.nn.functional.cross_entropy(logits, targets)),
        "accuracy": float((predicted == targets).float().mean()),
        # Every class counts the same: a head that ignores a rare breed does not score well.
        "macro_f1": float(f1_score(targets.numpy(), predicted.numpy(), average="macro", zero_division=0)),
    }


def train_loop(config: dict[str, Any]) -> None:
    """Runs in the Ray Train worker: train the head with early stopping on validation loss, log every
    epoch to the MLflow run, report the best epoch with its head as the checkpoint."""
    import ray.train
    import ray.train.torch
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    settings = TrainingSettings.model_validate(config["settings"])
    torch.manual_seed(settings.seed)
    train_x, train_y = _tensors(ray.train.get_dataset_shard("train"))
    val_x, val_y = _tensors(ray.train.get_dataset_shard("val"))
    head = ray.train.torch.prepare_model(classification_head(config["classes"], settings.hidden, settings.dropout))
    optimizer = torch.optim.AdamW(head.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    mlflow = MlflowClient(config["tracking_uri"]) if ray.train.get_context().get_world_rank() == 0 else None

    best, stale = float("inf"), 0
    best_epoch: dict[str, float] = {}
    best_state: dict[str, torch.Tensor] = {}
    for epoch in range(1, settings.max_epochs + 1):
        started = time.perf_counter()
        head.train()
        order = torch.randperm(len(train_x))
        train_loss = 0.0
        for start in range(0, len(order), settings.batch_size):
            batch = order[start : start + settings.batch_size]
            if len(batch) < 2:  # BatchNorm cannot train on one sample
                continue
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(head(train_x[batch]), train_y[batch])
            loss.backward()
            optimizer.step()
            train_loss += loss.item() * len(batch)
        head.eval()
        with torch.no_grad():
            val = epoch_metrics(head(val_x), val_y)
            train_accuracy = epoch_metrics(head(train_x), train_y)["accuracy"]
        metrics = {
            "epoch": epoch,
            "train_loss": train_loss / len(train_x),
            "train_accuracy": train_accuracy,
            "val_loss": val["loss"],
            "val_accuracy": val["accuracy"],
            "val_macro_f1": val["macro_f1"],
            "epoch_seconds": time.perf_counter() - started,
        }
        if mlflow:
            now = int(time.time() * 1000)
            mlflow.log_batch(
                config["run_id"], metrics=[Metric(k, float(v), now, epoch) for k, v in metrics.items() if k != "epoch"]
            )
        improved = val["loss"] < best - 1e-4
        if improved:
            best, best_epoch, stale = val["loss"], metrics, 0
            best_state = {k: v.detach().clone() for k, v in _unwrapped(head).state_dict().items()}
        else:
            stale += 1
        if stale >= settings.patience:
            break
    # One report, with the best epoch's head: each report is a round trip through the Train controller
    # (about a second here), far longer than an epoch of this head; per-epoch metrics went to MLflow.
    with tempfile.TemporaryDirectory() as directory:
        torch.save(best_state, Path(directory) / "head.pt")
        ray.train.report(best_epoch, checkpoint=ray.train.Checkpoint.from_directory(directory))


class EpochWatcher:
    """Follows a run's epochs from the driver, as the MLflow UI would: the worker logs them there."""

    KEYS = ("train_loss", "val_loss", "val_accuracy", "val_macro_f1")

    def __init__(self, registry: Registry, run_id: str, on_epoch: Callable[[dict[str, float]], None]) -> None:
        self.registry, self.run_id, self.on_epoch = registry, run_id, on_epoch
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.shown = 0

    def _poll(self) -> None:
        history = {key: self.registry.client.get_metric_history(self.run_id, key) for key in self.KEYS}
        epochs = min(len(metrics) for metrics in history.values())
        for epoch in range(self.shown, epochs):
            self.on_epoch({"epoch": epoch + 1, **{key: history[key][epoch].value for key in self.KEYS}})
        self.shown = epochs

    def _watch(self) -> None:
        while not self.stopped.wait(0.5):
            self._poll()

    def __enter__(self) -> EpochWatcher:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        self.thread.join()
        self._poll()  # the last epochs


def _tensors(shard: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The worker's whole shard as tensors: features are 1280 floats a photo, small enough to hold."""
    features, targets = [], []
    for batch in shard.iter_batches(batch_size=1024, batch_format="numpy"):
        features.append(np.stack(batch["features"]).astype(np.float32))
        targets.append(batch["target"].astype(np.int64))
    return torch.from_numpy(np.concatenate(features)), torch.from_numpy(np.concatenate(targets))


def _unwrapped(module: torch.nn.Module) -> torch.nn.Module:
    return getattr(module, "module", module)  # prepare_model wraps in DistributedDataParallel with >1 worker


def train_head(
    folder: Path,
    registry: Registry,
    settings: TrainingSettings = TrainingSettings(),
    *,
    model_name: str = MODEL_NAME,
    experiment: str | None = None,
    alias: str | None = None,
    storage: Path | None = None,
    progress: Callable[[int], None] | None = None,
    on_stage: Callable[[str], None] = lambda stage: None,
    on_epoch: Callable[[dict[str, float]], None] = lambda metrics: None,
) -> TrainingReport:
    """Train a head on `folder`, log the run, register a version of `model_name`, move `alias` to it.
    Needs Ray started; `storage` keeps Ray Train's checkpoints (a temp dir when None; on a multi-node
    cluster it must be storage every node reaches).
    Callbacks, for progress: `progress(photos)` as features come back, `on_stage(text)` after them,
    `on_epoch(metrics)` per epoch (read from the MLflow run the worker logs to)."""
    import mlflow
    import ray
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    files = labelled_photos(folder, settings)
    skipped = {
        str(path.relative_to(folder)): "not in a breed folder" for path, label in labelled_images(folder) if not label
    }

    dataset = ray.data.from_items([{"path": str(path), "label": label} for path, label in files])
    features = dataset.map_batches(
        BackboneFeatures, batch_size=16, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1
    )
    rows = []
    for row in features.iter_rows():
        if row["error"]:
            skipped[str(Path(row["path"]).relative_to(folder))] = row["error"]
        else:
            rows.append(row)
        if progress:
            progress(1)
    names = np.array([row["label"] for row in rows])
    train_idx, val_idx = stratified_split(names, settings.val_fraction, settings.seed)  # names: for its messages
    labels = sorted(set(names))
    targets = np.array([labels.index(name) for name in names])

    def split(indices: np.ndarray):
        return ray.data.from_items([{"features": rows[i]["features"], "target": int(targets[i])} for i in indices])

    registry.activate()
    experiment_id = registry.experiment_id(experiment or model_name)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"head-{folder.name}") as run:
        mlflow.set_tags({"retriever.kind": "trained-head", "retriever.folder": str(folder.resolve())})
        mlflow.log_params(
            {
                **settings.model_dump(),
                "classes": len(labels),
                "train_photos": len(train_idx),
                "val_photos": len(val_idx),
                "backbone": BACKBONE,
            }
        )
        mlflow.log_dict({"labels": labels, "skipped": skipped}, "dataset.json")

        on_stage(f"Training the head on {len(train_idx)} photos, validating on {len(val_idx)} (Ray Train)")
        with tempfile.TemporaryDirectory(prefix="retriever-train-") as scratch:
            trainer = TorchTrainer(
                train_loop,
                train_loop_config={
                    "settings": settings.model_dump(),
                    "classes": len(labels),
                    "tracking_uri": registry.tracking_uri,
                    "run_id": run.info.run_id,
                },
                # The head is small: one CPU worker trains it in seconds. More workers would shard the data.
                scaling_config=ScalingConfig(num_workers=1, use_gpu=False, resources_per_worker={"CPU": 1}),
                run_config=RunConfig(
                    name=f"head-{run.info.run_id[:8]}",
                    storage_path=str(storage or scratch),
                    checkpoint_config=CheckpointConfig(num_to_keep=1),
                ),
                datasets={"train": split(train_idx), "val": split(val_idx)},
            )
            with EpochWatcher(registry, run.info.run_id, on_epoch):
                result = trainer.fit()
            best = result.metrics  # the best epoch's, reported with its head
            with result.checkpoint.as_directory() as directory:
                state = torch.load(Path(directory) / "head.pt", weights_only=True)

        epoch_seconds = [m.value for m in registry.client.get_metric_history(run.info.run_id, "epoch_seconds")]
        epochs, seconds_per_epoch = len(epoch_seconds), float(np.median(epoch_seconds))
        best_metrics = {
            BEST_RUN_METRIC: float(best["val_loss"]),
            "best_val_accuracy": float(best["val_accuracy"]),
            "best_val_macro_f1": float(best["val_macro_f1"]),
            "best_epoch": int(best["epoch"]),
        }
        mlflow.log_metrics(best_metrics)

        on_stage("Registering the model")
        head = classification_head(len(labels), settings.hidden, settings.dropout)
        head.load_state_dict(state)
        network = BreedNetwork(load_backbone(), head).eval()
        card = ModelCard(labels=labels, backbone_sha256=backbone_fingerprint(), head="mlp")
        info = registry.log_model(network, card, registered_name=model_name)
        version = int(info.registered_model_version)
    registry.client.update_model_version(
        model_name,
        str(version),
        f"Head trained on {folder.name} ({len(labels)} breeds); best epoch {best_metrics['best_epoch']}, "
        f"validation macro F1 {best_metrics['best_val_macro_f1']:.2f}.",
    )
    if alias:
        registry.set_alias(model_name, alias, version)
    return TrainingReport(
        run_id=run.info.run_id,
        version=version,
        labels=labels,
        epochs=epochs,
        best_epoch=best_metrics["best_epoch"],
        metrics=best_metrics,
        seconds_per_epoch=seconds_per_epoch,
        skipped=skipped,
    )
