"""Vision deployment: one vision model per replica, requests batched into one forward pass.

The model comes from the MLflow registry (backend/models/registry.py) by reference, through the one
factory of vision models (backend/models/vision_loader.py). A new model goes
live without a failed request in two ways:
- `user_config` changes (`serve deploy` with another `model`): Serve calls `reconfigure`;
- the alias moves (`retriever train --alias champion`, `retriever promote`): the replica notices
  within `follow_alias_s`.
Either way the new model is loaded beside the old one, which answers until the swap (one assignment).
A swap to a model that cannot be loaded, or that embeds differently (another backbone: the gallery
holds embeddings of the running one), is refused: the old model keeps answering and the readiness
route says why.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray import serve

from backend import telemetry
from backend.models.analysis import Explanation, ImageAnalysis
from backend.models.vision import VisionModel
from backend.models.vision_loader import VisionKind, load_pinned, pin_vision_model
from shared.images import Embedder
from shared.schemas import DeploymentStatus

logger = logging.getLogger("ray.serve")

MAX_CONCURRENT_PASSES = 4


class VisionSettings(BaseModel):
    """The deployment's `user_config`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: VisionKind = "registry"
    model: str | None = Field(
        None,
        description="registry: models:/NAME@ALIAS (default models:/dog-breeds@champion), models:/NAME/VERSION, "
        "runs:/RUN_ID/model or best-run:EXPERIMENT; clip: hub id or path; efficientnet-lite0: unused.",
    )
    tracking_uri: str | None = Field(
        None, description="MLflow store; None: $MLFLOW_TRACKING_URI or SQLite in the data dir."
    )
    follow_alias_s: float = Field(10.0, ge=0, description="How often to check where the alias points; 0: never.")
    dog_threshold: float = Field(0.5, ge=0, le=1, description="Dog score from which a photo is a dog.")
    torch_threads: int = Field(1, ge=1, description="Threads one forward pass uses.")
    concurrent_passes: int = Field(
        1,
        ge=1,
        le=MAX_CONCURRENT_PASSES,
        description="Forward passes at once, each in a thread of its own (torch releases the GIL).",
    )
    max_batch_size: int = Field(8, ge=1, le=256, description="Most images in one forward pass.")
    batch_wait_timeout_s: float = Field(
        0.0, ge=0, le=1, description="How long a forward pass waits for more images to join once one is waiting."
    )

    def source(self) -> tuple:
        """What decides which model to load (the rest applies without a reload)."""
        return self.kind, self.model, self.tracking_uri


def count_photos(analyses: list[ImageAnalysis]) -> None:
    for analysis in analyses:
        telemetry.photos().inc(tags={"verdict": "dog" if analysis.is_dog else "not_dog"})
        if analysis.is_dog:
            telemetry.top_breeds().inc(tags={"breed": analysis.top_breeds(1)[0][0]})


@serve.deployment(name="Vision", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=32, user_config={})
class Vision:
    async def __init__(self) -> None:
        self.settings: VisionSettings | None = None
        self.model: VisionModel | None = None
        self.loaded_from: str | None = None  # the pinned reference (models:/dog-breeds/3) of self.model
        self.refused: str | None = None  # why the last swap did not happen
        self.refused_from: str | None = None  # and what it would have loaded
        self.load_seconds = 0.0  # how long loading the serving model took (it served meanwhile)
        # Loads (from reconfigure and from the alias check) one at a time.
        self.swap_lock = threading.Lock()
        self.passes = asyncio.Semaphore(1)  # sized by the settings (reconfigure)
        self.follower = asyncio.get_running_loop().create_task(self._follow_alias())
        logger.addFilter(telemetry.ModelVersionFilter(lambda: self.model and self.model.model_name))

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        import torch

        with self.swap_lock:
            try:
                settings = VisionSettings.model_validate(user_config or {})
            except ValidationError as exc:
                if self.model is None:
                    raise
                self._refuse(f"ignored an invalid user_config: {exc}")
                return
            torch.set_num_threads(settings.torch_threads)
            if self.settings is None or self.settings.source() != settings.source():
                self._load(settings)
            # Per-call settings: no reload.
            self.model.dog_threshold = settings.dog_threshold
            self._analyse_batch.set_max_batch_size(settings.max_batch_size)
            self._analyse_batch.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)
            if self.settings is None or self.settings.concurrent_passes != settings.concurrent_passes:
                self.passes = asyncio.Semaphore(settings.concurrent_passes)  # passes running finish on the old one
            self.settings = settings

    def _follow(self, settings: VisionSettings) -> None:
        with self.swap_lock:
            if settings is self.settings:  # not if reconfigured meanwhile: the new settings decide
                self._load(settings, bootstrap=False)

    def _load(self, settings: VisionSettings, bootstrap: bool = True) -> None:
        """Load the model the settings name unless it is the one serving; swap it in. Under swap_lock.

        While a model serves, a new one that cannot be loaded (a reference naming nothing, an unreachable
        registry) or that embeds differently is refused: the serving model stays, `status` says why, and
        the alias follower does not retry the same version. Only a replica with no model yet fails, so
        that Serve reports the deployment as failed."""
        started = time.perf_counter()
        source = None
        try:
            source = pin_vision_model(settings.kind, settings.model, settings.tracking_uri, register_packaged=bootstrap)
            if source in (self.loaded_from, self.refused_from):
                return
            model = load_pinned(settings.kind, source, settings.dog_threshold, settings.tracking_uri)
        except Exception as exc:
            if self.model is None:
                raise
            self._refuse(f"did not switch to {source or settings.model or settings.kind}: {exc}", source)
            return
        if self.model is not None and model.embedder != self.model.embedder:
            self._refuse(
                f"did not switch to {model.model_name}: its embeddings ({model.embedder}) are not the "
                f"gallery's ({self.model.embedder}); redeploy the application to change embedders",
                source,
            )
            return
        previous = self.model.model_name if self.model else None
        self.model, self.loaded_from, self.refused, self.refused_from = model, source, None, None
        self.load_seconds = time.perf_counter() - started
        telemetry.record_model_swap("Vision", previous, model.model_name)
        logger.info("Vision now serves %s (was %s), loaded in %.1f s", model.model_name, previous, self.load_seconds)

    def _refuse(self, reason: str, source: str | None = None) -> None:
        self.refused, self.refused_from = reason, source
        logger.error(reason)

    async def _follow_alias(self) -> None:
        """Swap in what the alias points at when it moves (a no-op unless it did)."""
        while True:
            settings = self.settings
            await asyncio.sleep(settings.follow_alias_s if settings and settings.follow_alias_s else 5.0)
            if (
                settings is None
                or settings.kind != "registry"
                or not settings.follow_alias_s
                or settings is not self.settings
            ):
                continue
            try:
                await asyncio.to_thread(self._follow, settings)
            except Exception:  # the registry may be briefly unreachable: keep serving, try again later
                logger.exception("checking the model registry failed")

    async def analyse(self, pixels: np.ndarray) -> ImageAnalysis:
        """One image's model input (uint8, from shared.images.to_model_input) -> its analysis."""
        return await self._analyse_batch(pixels)

    # Sizes and wait come from the settings (reconfigure). Serve's batcher forms a batch from what has
    # arrived within the wait, then the batch waits for a free pass: with no wait the batches stay
    # small, which costs little on a CPU (a pass costs about as much per image at batch 1 as at 4, and
    # more at 8: docs/benchmarks.md); on a GPU, a wait of a few ms fills them. The decorator's cap on batches
    # at once is fixed, so `self.passes` holds them to the settings' concurrent_passes.
    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.0, max_concurrent_batches=MAX_CONCURRENT_PASSES)
    async def _analyse_batch(self, batch: list[np.ndarray]) -> list[ImageAnalysis]:
        async with self.passes:
            # Off the event loop: the replica keeps answering health checks and queueing requests. The
            # batch runs on the model of the moment it starts; a swap meanwhile affects the next batch.
            with telemetry.model_time("Vision", "forward"):
                analyses = await asyncio.to_thread(self.model.analyse, batch)
        count_photos(analyses)
        return analyses

    async def explain(self, pixels: np.ndarray, breed: str | None = None) -> tuple[ImageAnalysis, Explanation]:
        """One image's analysis and where the model looked for `breed` (default: the top one). A pass
        of its own (it needs gradients), beside the batched ones: a photo without it pays nothing."""
        async with self.passes:
            with telemetry.model_time("Vision", "explain"):
                analysis, explanation = await asyncio.to_thread(self.model.explain, pixels, breed)
        count_photos([analysis])
        return analysis, explanation

    def status(self) -> DeploymentStatus:
        ready = self.model is not None
        return DeploymentStatus(
            ready=ready,
            model=self.model.model_name if ready else None,
            detail=self.refused or (f"from {self.loaded_from}, loaded in {self.load_seconds:.1f} s" if ready else None),
        )

    def embedder(self) -> Embedder:
        return Embedder(self.model.embedder, self.model.embedding_dim, self.model.input_spec)
