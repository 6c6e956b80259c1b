"""Offline job: add a folder of photos to the gallery with Ray Data batch inference.

Layout (the tutorial's): `<folder>/<breed>/<photo>`; photos directly in the folder get the predicted
breed when they show a dog. Decoding and the model run in a pool of Ray actors (the model loaded once
per actor); rows are written to the gallery store as they come back, so an interrupted job keeps what
it wrote. A running app's Gallery replicas pick the new rows up within their refresh interval.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backend.models.index import GalleryStore, gallery_label, labelled_images
from backend.models.vision_loader import load_vision_model
from shared.config import Limits
from shared.errors import InvalidImage, InvalidLabel
from shared.images import decode_image, thumbnail_jpeg, to_model_input

COLUMNS = ("path", "label", "label_source", "embedder", "embedding", "thumbnail", "error")


class EmbedPhotos:
    """A Ray Data map_batches callable: file paths in; embeddings, labels and thumbnails out."""

    def __init__(self, kind: str, model: str | None, tracking_uri: str | None) -> None:
        self.model = load_vision_model(kind, model, tracking_uri=tracking_uri)
        self.limits = Limits()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        rows: list[dict[str, Any]] = []
        pixels, kept = [], []
        for path, label in zip(batch["path"], batch["label"]):
            try:
                image = decode_image(Path(path).read_bytes(), self.limits)
            except (InvalidImage, OSError) as exc:  # reported, the job goes on
                rows.append(dict.fromkeys(COLUMNS, None) | {"path": path, "thumbnail": b"", "error": str(exc)})
                continue
            pixels.append(to_model_input(image, self.model.input_spec))
            kept.append((path, label, thumbnail_jpeg(image)))
        for (path, label, thumbnail), analysis in zip(kept, self.model.analyse(pixels) if pixels else []):
            label, label_source = gallery_label(label, "folder", analysis)
            rows.append(
                {
                    "path": path,
                    "label": label,
                    "label_source": label_source,
                    "embedder": analysis.embedder,
                    "embedding": analysis.embedding.tolist(),
                    "thumbnail": thumbnail,
                    "error": "",
                }
            )
        return {key: [row[key] for row in rows] for key in COLUMNS}


@dataclass
class IndexReport:
    added: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    embedder: str = ""


def index_folder(
    folder: Path,
    database_url: str,
    kind: str = "registry",
    model: str | None = None,
    tracking_uri: str | None = None,
    batch_size: int = 16,
    progress: Any = None,
) -> IndexReport:
    """Embed every photo under `folder` and add it to the gallery at `database_url`. Needs Ray started."""
    import ray

    files = labelled_images(folder)
    if not files:
        raise ValueError(f"no images under {folder}")
    store = GalleryStore(database_url)
    report = IndexReport()
    dataset = ray.data.from_items([{"path": str(path), "label": label or ""} for path, label in files])
    embedded = dataset.map_batches(
        EmbedPhotos,
        fn_constructor_args=(kind, model, tracking_uri),
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=1),
        num_cpus=1,
    )
    for row in embedded.iter_rows():
        source = f"file:{Path(row['path']).relative_to(folder)}"
        if row["error"]:
            report.failed[source] = row["error"]
        else:
            try:
                store.add(
                    np.asarray(row["embedding"], dtype=np.float32),
                    row["thumbnail"],
                    row["embedder"],
                    row["label"],
                    row["label_source"],
                    source,
                    added_by="retriever index",
                )
            except InvalidLabel as exc:  # a folder name that is no label (a control character)
                report.failed[source] = str(exc)
            else:
                report.added += 1
                report.embedder = row["embedder"]
        if progress:
            progress(1)
    return report
