"""Vision deployment: one vision model per replica, requests batched into one forward pass."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from backend.models.vision import ImageAnalysis, VisionModel, load_vision_model
from shared.images import Embedder
from shared.schemas import DeploymentStatus


class VisionSettings(BaseModel):
    """The deployment's `user_config`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["efficientnet-lite0", "clip"] = "efficientnet-lite0"
    model: str | None = Field(None, description="Weights file (efficientnet) or hub id / path (clip).")
    dog_threshold: float = Field(0.5, ge=0, le=1, description="Dog score from which a photo is a dog.")
    torch_threads: int = Field(1, ge=1)


@serve.deployment(name="Vision", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=16, user_config={})
class Vision:
    def __init__(self) -> None:
        self.settings: VisionSettings | None = None
        self.model: VisionModel | None = None

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        import torch

        settings = VisionSettings.model_validate(user_config or {})
        torch.set_num_threads(settings.torch_threads)
        if self.settings is None or (self.settings.kind, self.settings.model) != (settings.kind, settings.model):
            self.model = load_vision_model(settings.kind, settings.model)
        self.model.dog_threshold = settings.dog_threshold  # a per-call setting: no reload
        self.settings = settings

    async def analyse(self, pixels: np.ndarray) -> ImageAnalysis:
        """One image's model input (uint8, from shared.images.to_model_input) -> its analysis."""
        return await self._analyse_batch(pixels)

    # Concurrent requests wait up to 10 ms to share one forward pass. Measured on 2 cores, the pass
    # costs the same per image at batch 1 and 8 (~39 images/s with 2 threads): what a batch saves
    # here is per-call overhead (one thread hand-off per batch); with more cores or a GPU it saves more.
    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _analyse_batch(self, batch: list[np.ndarray]) -> list[ImageAnalysis]:
        # Off the event loop: the replica keeps answering health checks and queueing requests.
        return await asyncio.to_thread(self.model.analyse, batch)

    def status(self) -> DeploymentStatus:
        ready = self.model is not None
        return DeploymentStatus(ready=ready, model=self.model.model_name if ready else None)

    def embedder(self) -> Embedder:
        return Embedder(self.model.model_name, self.model.embedding_dim, self.model.input_spec)
