"""The MLflow model registry of breed models: pure code (mlflow and torch; no ray, no fastapi).

A registered version is one `BreedNetwork` (backbone + ImageNet head + breed head, normalisation inside)
saved with torch.export ("pt2", MLflow's safe format: loading runs no pickled code), plus a model card
in the MLmodel metadata: the labels in output order, the backbone and its weights' sha256, and the
input geometry. Serving loads it by reference:

    models:/dog-breeds@champion   the version an alias points at (the default)
    models:/dog-breeds/3          a version
    runs:/<run id>/model          the model a run logged
    best-run:<experiment>         the tutorial's choice: the run with the lowest validation loss

`ensure_packaged` registers the packaged model (EfficientNet-Lite0 and its ImageNet dog classes) once,
so the served model comes from the registry on a fresh machine too.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from backend.data import default_tracking_uri
from backend.models.vision import (
    BACKBONE,
    BACKBONE_INPUT,
    BreedClassifier,
    BreedNetwork,
    backbone_fingerprint,
    dog_breeds,
    imagenet_dog_head,
    load_backbone,
)
from shared.images import InputSpec

MODEL_NAME = "dog-breeds"  # the registered model (and experiment) of the packaged and trained breed models
CHAMPION = "champion"  # the alias the app serves
DEFAULT_MODEL = f"models:/{MODEL_NAME}@{CHAMPION}"
PACKAGED_TAG = "packaged_backbone_sha256"  # marks the version ensure_packaged registered
BEST_RUN_METRIC = "best_val_loss"  # what "best-run:" sorts by, lowest first


class RegistryError(LookupError):
    """A model reference that names nothing in the registry."""


class ModelCard(BaseModel):
    """What serving needs to know besides the network: stored as the MLflow model's metadata."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    labels: list[str]
    backbone: str = BACKBONE
    backbone_sha256: str
    resize_short: int = BACKBONE_INPUT.resize_short
    crop: int = BACKBONE_INPUT.crop
    head: str  # "imagenet-dogs" (packaged) or "mlp" (trained by backend/jobs/train_head.py)

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec(resize_short=self.resize_short, crop=self.crop)


@dataclass(frozen=True)
class ResolvedModel:
    uri: str  # pinned: an alias resolved to its version, a best-run to its run
    name: str  # what the API and UI say answered: "dog-breeds/3", or "run 1a2b3c4d" for a run's model

    @classmethod
    def pinned(cls, uri: str) -> ResolvedModel:
        """From a pinned uri (models:/NAME/VERSION or runs:/RUN_ID/model), as `resolve` made it."""
        if match := re.fullmatch(r"models:/([^/@]+)/(\d+)", uri):
            return cls(uri, f"{match.group(1)}/{match.group(2)}")
        if match := re.fullmatch(r"runs:/([0-9a-f]+)/.+", uri):
            return cls(uri, f"run {match.group(1)[:8]}")
        raise RegistryError(f"{uri!r} is not a pinned model reference")


def packaged_network() -> tuple[BreedNetwork, ModelCard]:
    backbone = load_backbone()
    card = ModelCard(labels=list(dog_breeds()), backbone_sha256=backbone_fingerprint(), head="imagenet-dogs")
    return BreedNetwork(backbone, imagenet_dog_head(backbone)).eval(), card


class Registry:
    """One MLflow tracking + registry store (`tracking_uri`; default: SQLite in the data dir)."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        import mlflow
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri or default_tracking_uri()
        self.activate()
        self.client = MlflowClient(self.tracking_uri, self.tracking_uri)
        self._mlflow = mlflow

    def activate(self) -> None:
        """mlflow's fluent API (runs, log_model, models:/ downloads) reads process-wide URIs."""
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)

    def artifact_root(self) -> Path | None:
        """For a local store, artifacts go beside the database (mlartifacts/), not into the current
        directory (MLflow's default). A server decides for itself."""
        url = urlparse(self.tracking_uri)
        if url.scheme == "sqlite":
            return Path(self.tracking_uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts"
        if url.scheme in ("", "file"):
            return Path(url.path).resolve() / "mlartifacts"
        return None

    def experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found:
            return found.experiment_id
        root = self.artifact_root()
        return self.client.create_experiment(name, artifact_location=(root / name).as_uri() if root else None)

    # ------------------------------------------------------------------------------- reading

    def resolve(self, reference: str) -> ResolvedModel:
        """Pin a reference: an alias to its current version, best-run:<experiment> to that run."""
        from mlflow.exceptions import MlflowException

        self.activate()
        try:
            if match := re.fullmatch(r"models:/([^/@]+)@([^/]+)", reference):
                version = self.client.get_model_version_by_alias(*match.groups())
                return ResolvedModel.pinned(f"models:/{version.name}/{version.version}")
            if match := re.fullmatch(r"models:/([^/@]+)/(\d+)", reference):
                self.client.get_model_version(*match.groups())
                return ResolvedModel.pinned(reference)
            if match := re.fullmatch(r"best-run:(.+)", reference):
                return ResolvedModel.pinned(f"runs:/{self.best_run(match.group(1))}/model")
            if match := re.fullmatch(r"runs:/([0-9a-f]+)/.+", reference):
                self.client.get_run(match.group(1))
                return ResolvedModel.pinned(reference)
        except MlflowException as exc:
            raise RegistryError(f"{reference}: {exc.message}") from exc
        raise RegistryError(
            f"{reference!r} is not a model reference; use models:/NAME@ALIAS, models:/NAME/VERSION, "
            "runs:/RUN_ID/model or best-run:EXPERIMENT"
        )

    def best_run(self, experiment: str) -> str:
        """The tutorial's choice: of the experiment's finished training runs, the lowest validation loss."""
        found = self.client.get_experiment_by_name(experiment)
        runs = self.client.search_runs(
            [found.experiment_id] if found else [],
            filter_string=f"metrics.{BEST_RUN_METRIC} >= 0 and attributes.status = 'FINISHED'",
            order_by=[f"metrics.{BEST_RUN_METRIC} ASC"],
            max_results=1,
        )
        if not runs:
            raise RegistryError(
                f"best-run:{experiment}: no finished run with {BEST_RUN_METRIC} in experiment {experiment!r}"
            )
        return runs[0].info.run_id

    def card(self, uri: str) -> ModelCard:
        self.activate()
        return ModelCard.model_validate(self._mlflow.models.get_model_info(uri).metadata or {})

    def load(self, model: ResolvedModel, dog_threshold: float = 0.5) -> BreedClassifier:
        """Load a resolved model into a classifier (reading its files once; nothing stays on disk)."""
        from mlflow.models import Model

        self.activate()
        with tempfile.TemporaryDirectory(prefix="retriever-model-") as local:
            path = self._mlflow.artifacts.download_artifacts(artifact_uri=model.uri, dst_path=local)
            card = ModelCard.model_validate(Model.load(path).metadata or {})
            network = self._mlflow.pytorch.load_model(path)
        if card.backbone != BACKBONE:
            raise RegistryError(f"{model.uri}: backbone {card.backbone!r} is not one this version serves ({BACKBONE})")
        return BreedClassifier(
            network,
            tuple(card.labels),
            model_name=model.name,
            embedder=card.backbone,
            input_spec=card.input_spec,
            dog_threshold=dog_threshold,
        )

    # ------------------------------------------------------------------------------- writing

    def log_model(self, network: BreedNetwork, card: ModelCard, registered_name: str | None = None):
        """Log the network (torch.export) and its card into the active run; register it if named.
        Returns MLflow's ModelInfo (with `.registered_model_version`)."""
        from mlflow.models import ModelSignature
        from mlflow.types import Schema, TensorSpec

        self.activate()
        # Height and width stay dynamic (the network pools globally), so a tiny example suffices;
        # batch 2, because torch.export fixes a dimension whose example size is 1.
        signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3), "pixels")]))
        return self._mlflow.pytorch.log_model(
            network.eval(),
            name="model",
            signature=signature,
            input_example=np.zeros((2, 64, 64, 3), dtype=np.uint8),
            serialization_format="pt2",
            metadata=card.model_dump(),
            registered_model_name=registered_name,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            validate_serving_input=False,  # it would re-run the whole network on the example in a subprocess
        )

    def set_alias(self, name: str, alias: str, version: int | str) -> None:
        self.client.set_registered_model_alias(name, alias, str(version))

    def ensure_packaged(self, name: str = MODEL_NAME, alias: str = CHAMPION) -> tuple[int, bool]:
        """Register the packaged model as a version of `name` unless one already is, and point `alias` at
        it unless the alias points somewhere already (a promoted trained model stays served).
        Idempotent. Returns (the packaged version, whether this call registered it)."""
        from mlflow.exceptions import MlflowException

        self.activate()
        fingerprint = backbone_fingerprint()
        try:
            self.client.get_registered_model(name)
            existing = self.client.search_model_versions(f"name = '{name}' and tags.{PACKAGED_TAG} = '{fingerprint}'")
        except MlflowException:
            existing = []
        if existing:
            version, created = int(existing[0].version), False
        else:
            network, card = packaged_network()
            with self._mlflow.start_run(experiment_id=self.experiment_id(name), run_name="packaged-efficientnet-lite0"):
                self._mlflow.set_tags({"retriever.kind": "packaged", PACKAGED_TAG: fingerprint})
                info = self.log_model(network, card, registered_name=name)
            version, created = int(info.registered_model_version), True
            self.client.set_model_version_tag(name, str(version), PACKAGED_TAG, fingerprint)
            self.client.update_model_version(
                name, str(version), "EfficientNet-Lite0 (ImageNet weights) with its 118 ImageNet dog-breed classes."
            )
        if alias not in self.client.get_registered_model(name).aliases:
            self.set_alias(name, alias, version)
        return version, created
