"""The one factory of vision models: what a configuration names, pinned, then loaded.

Above both `vision` (the networks) and `registry` (where breed models are kept), so neither imports the
other's caller: registry -> vision, and this module -> both. The Vision deployment pins first (to tell
whether a reload is needed at all) and loads second; a job just calls `load_vision_model`.
"""

from __future__ import annotations

from typing import Literal

from backend.models.registry import DEFAULT_MODEL, Registry, ResolvedModel
from backend.models.vision import BreedClassifier, ClipVision, VisionModel

VisionKind = Literal["registry", "efficientnet-lite0", "clip"]
CLIP_DEFAULT = "openai/clip-vit-base-patch32"


def pin_vision_model(
    kind: VisionKind, model: str | None = None, tracking_uri: str | None = None, *, register_packaged: bool = False
) -> str:
    """Exactly what `kind` and `model` name now: a registry alias resolved to its version
    ("models:/dog-breeds/3"), else "clip:MODEL" or "efficientnet-lite0:". `register_packaged`: on a
    registry without the packaged model, register it first (`retriever up` has done so already; `serve
    run` on a fresh machine has not)."""
    if kind == "clip":
        return f"clip:{model or CLIP_DEFAULT}"
    if kind != "registry":
        return f"{kind}:"
    registry = Registry(tracking_uri)
    reference = model or DEFAULT_MODEL
    if register_packaged and reference == DEFAULT_MODEL:
        registry.ensure_packaged()
    return registry.resolve(reference).uri


def load_pinned(
    kind: VisionKind, pinned: str, dog_threshold: float = 0.5, tracking_uri: str | None = None
) -> VisionModel:
    """Load what `pin_vision_model` returned."""
    if kind == "registry":
        return Registry(tracking_uri).load(ResolvedModel.pinned(pinned), dog_threshold)
    if kind == "efficientnet-lite0":
        return BreedClassifier.packaged(dog_threshold)
    if kind == "clip":
        return ClipVision.load(pinned.removeprefix("clip:"), dog_threshold)
    raise ValueError(f"unknown vision model kind {kind!r}; expected 'registry', 'efficientnet-lite0' or 'clip'")


def load_vision_model(
    kind: VisionKind, model: str | None = None, dog_threshold: float = 0.5, tracking_uri: str | None = None
) -> VisionModel:
    """The vision model a configuration names: "registry" (a registered breed model, by default
    models:/dog-breeds@champion), "efficientnet-lite0" (the packaged model, not through the registry)
    or "clip" (a hub id or path)."""
    return load_pinned(kind, pin_vision_model(kind, model, tracking_uri), dog_threshold, tracking_uri)
