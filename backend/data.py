"""Where the embedded (one machine) deployment keeps its data: one directory, by default
~/.local/share/retriever, or $RETRIEVER_DATA_DIR. Each store can be pointed elsewhere by config, or, for
every process of a cluster at once, by the environment its nodes start with: $RETRIEVER_GALLERY_URL and
$MLFLOW_TRACKING_URI (docs/scale-out.md)."""

from __future__ import annotations

import os
from pathlib import Path


def default_data_dir() -> Path:
    return Path(os.environ.get("RETRIEVER_DATA_DIR") or Path.home() / ".local" / "share" / "retriever")


def _in_data_dir(name: str) -> Path:
    data_dir = default_data_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    return data_dir / name


def default_model_cache_dir() -> Path:
    """Files made from the packaged models once and reused by every later start (the ONNX export of the
    sentence encoder). Safe to delete: they are made again."""
    return _in_data_dir("model-cache")


GALLERY_URL_ENV = "RETRIEVER_GALLERY_URL"


def default_gallery_url() -> str:
    """SQLAlchemy URL of the gallery: $RETRIEVER_GALLERY_URL (PostgreSQL, say), else SQLite in the data dir."""
    return os.environ.get(GALLERY_URL_ENV) or f"sqlite:///{_in_data_dir('gallery.db')}"


def default_tracking_uri() -> str:
    """MLflow tracking + registry store: $MLFLOW_TRACKING_URI (a tracking server, say), else SQLite in the
    data dir, with run artifacts and models beside it in mlartifacts/."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{_in_data_dir('mlflow.db')}"
