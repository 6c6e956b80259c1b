"""The applications' `args` in serve_config.yaml, validated by the builders (retriever/graph.py) and, before
anything starts, by `retriever up`: here, apart from the graph, so that checking them imports no model
runtime, UI framework or deployment code into the driver."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from backend.deployments.gallery import GallerySettings
from shared.config import Limits
from shared.rate_limit import RateLimit
from ui.share import Credentials, ShareSettings

API_APP = "api"


class ApiArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limits: Limits = Limits()
    gallery: GallerySettings = GallerySettings()


class UiArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limits: Limits = Limits()
    backend_app: str = API_APP
    # Requests running at once on one UI replica; beyond it Gradio queues them and shows the position.
    concurrency_limit: int = 8
    # Requests waiting in one UI replica's queue; past it a user is told the queue is full (and can try
    # again) instead of waiting behind work that cannot finish in time.
    max_queue_size: int = Field(64, ge=1)
    # A public link to the UI through Gradio's tunnel (off unless asked for).
    share: ShareSettings = ShareSettings()
    # USER:PASSWORD asked before the UI shows (locally and through a share link alike).
    login: Credentials | None = None
    # Per login (or browser address) on Summarize, Find and Add, as the API's per key; None: no limit.
    rate_limit: RateLimit | None = None
