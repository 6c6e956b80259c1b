"""Summarizer deployment: one summarizer model per replica, chosen by `user_config`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from backend.models.text import Summarizer as SummarizerModel
from backend.models.text import load_summarizer
from shared.schemas import DeploymentStatus, SummarizeOptions, SummaryResult


class SummarizerSettings(BaseModel):
    """The deployment's `user_config` (serve_config.yaml). Changing it with `serve deploy` reconfigures
    replicas in place; the model is reloaded only when what it is built from changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["extractive", "seq2seq"] = "extractive"
    model: str | None = Field(
        None,
        description="Hub id or local path. None: the packaged all-MiniLM-L6-v2 (extractive) or t5-small (seq2seq).",
    )
    # extractive
    max_sentences: int = Field(3, ge=1)
    diversity: float = Field(0.3, ge=0.0, le=1.0)
    # seq2seq; None keeps the checkpoint's own generation defaults
    prefix: str | None = None
    num_beams: int | None = Field(None, ge=1)
    max_length: int | None = Field(None, ge=1)
    min_length: int | None = Field(None, ge=0)
    # Ray sets OMP threads to 1 in workers; say how many cores a replica's torch may use.
    torch_threads: int = Field(1, ge=1)

    def load_params(self) -> dict[str, Any]:
        if self.kind == "extractive":
            return {"model_path": self.model, "max_sentences": self.max_sentences, "diversity": self.diversity}
        return {
            "model": self.model or "t5-small",
            "prefix": self.prefix,
            "num_beams": self.num_beams,
            "max_length": self.max_length,
            "min_length": self.min_length,
        }


@serve.deployment(name="Summarizer", ray_actor_options={"num_cpus": 1.0}, max_ongoing_requests=4)
class Summarizer:
    def __init__(self) -> None:
        self.settings: SummarizerSettings | None = None
        self.model: SummarizerModel | None = None

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        import torch

        settings = SummarizerSettings.model_validate(user_config or {})
        torch.set_num_threads(settings.torch_threads)
        if self.settings is None or self.settings.kind != settings.kind or self.settings.load_params() != settings.load_params():
            self.model = load_summarizer(settings.kind, **settings.load_params())
        self.settings = settings

    # Sync methods: Serve runs them on its thread pool, so model work never blocks the replica's event loop.
    def summarize(self, text: str, options: SummarizeOptions) -> SummaryResult:
        started = time.perf_counter()
        summary = self.model.summarize(text, **options.model_dump(exclude_none=True))
        return SummaryResult(
            summary=summary.text,
            model=summary.model,
            pieces=summary.pieces,
            model_ms=(time.perf_counter() - started) * 1000,
        )

    def stream(self, text: str, options: SummarizeOptions) -> Iterator[str]:
        yield from self.model.stream(text, **options.model_dump(exclude_none=True))

    def status(self) -> DeploymentStatus:
        return DeploymentStatus(ready=self.model is not None, model=self.model.model_name if self.model else None)
