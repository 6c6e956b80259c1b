"""Summarizer deployment: one summarizer model per replica, chosen by `user_config`."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from ray import serve

from backend import telemetry
from backend.data import default_model_cache_dir
from backend.models.text import Summarizer as SummarizerModel
from backend.models.text import load_summarizer
from shared.schemas import DeploymentStatus, SummarizeOptions, SummaryResult

logger = logging.getLogger("ray.serve")


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
    first_chunk_tokens: int | None = Field(
        128,
        ge=16,
        description="Tokens in the first chunk of a long article (None: a full input window). "
        "The encoder reads a whole chunk before the first word streams out: 128 tokens take about a quarter "
        "of the time of t5-small's 512.",
    )
    runtime: Literal["onnx", "torch"] = Field(
        "onnx",
        description="extractive: the sentence encoder on ONNX Runtime (exported once into the data dir; the same "
        "embeddings in about 0.6x the time, and no torch in the replica) or on sentence-transformers.",
    )
    # Ray sets OMP threads to 1 in workers; say how many cores a replica's model may use.
    threads: int = Field(1, ge=1, validation_alias=AliasChoices("threads", "torch_threads"))

    def load_params(self) -> dict[str, Any]:
        """What the model is built from: a change reloads it."""
        if self.kind == "extractive":
            return {"model_path": self.model, "runtime": self.runtime, "threads": self.threads}
        return {"model": self.model or "t5-small", "prefix": self.prefix}

    def call_defaults(self) -> dict[str, Any]:
        """Per-request settings a request's options override: a change applies without a reload."""
        if self.kind == "extractive":
            return {"max_sentences": self.max_sentences, "diversity": self.diversity}
        generation = {"num_beams": self.num_beams, "max_length": self.max_length, "min_length": self.min_length}
        return {key: value for key, value in generation.items() if value is not None}


# user_config={} so that reconfigure (which loads the model) runs even when a config sets none.
@serve.deployment(name="Summarizer", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=4, user_config={})
class Summarizer:
    def __init__(self) -> None:
        self.settings: SummarizerSettings | None = None
        self.model: SummarizerModel | None = None
        logger.addFilter(telemetry.ModelVersionFilter(lambda: self.model and self.model.model_name))

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        settings = SummarizerSettings.model_validate(user_config or {})
        if settings.kind == "seq2seq" or settings.runtime == "torch":
            import torch  # only here: the extractive model on ONNX Runtime runs without it

            torch.set_num_threads(settings.threads)
        current = (self.settings.kind, self.settings.load_params()) if self.settings else None
        if current != (settings.kind, settings.load_params()):
            previous = self.model.model_name if self.model else None
            extra = {"cache_dir": default_model_cache_dir()} if settings.kind == "extractive" else {}
            self.model = load_summarizer(settings.kind, **settings.load_params(), **extra)
            telemetry.record_model_swap("Summarizer", previous, self.model.model_name)
        if settings.kind == "seq2seq":
            self.model.first_chunk_tokens = settings.first_chunk_tokens  # chunking only: no reload
        self.settings = settings

    # Sync methods: Serve runs them on its thread pool, so model work never blocks the replica's event loop.
    def summarize(self, text: str, options: SummarizeOptions) -> SummaryResult:
        started = time.perf_counter()
        summary = self.model.summarize(text, **self._options(options))
        seconds = time.perf_counter() - started
        telemetry.model_seconds().observe(seconds, tags={"deployment": "Summarizer", "call": "summarize"})
        return SummaryResult(
            summary=summary.text,
            model=summary.model,
            pieces=summary.pieces,
            model_ms=seconds * 1000,
            sentences=list(summary.sentences) if summary.sentences is not None else None,
        )

    def stream(self, text: str, options: SummarizeOptions) -> Iterator[str]:
        started = time.perf_counter()
        yield from self.model.stream(text, **self._options(options))
        seconds = time.perf_counter() - started  # the whole summary, as for `summarize`
        telemetry.model_seconds().observe(seconds, tags={"deployment": "Summarizer", "call": "stream"})

    def _options(self, options: SummarizeOptions) -> dict[str, Any]:
        return self.settings.call_defaults() | options.model_dump(exclude_none=True)

    def status(self) -> DeploymentStatus:
        return DeploymentStatus(ready=self.model is not None, model=self.model.model_name if self.model else None)
