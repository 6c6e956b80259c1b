"""Builds the deployment graph: the one place that wires deployments together.

serve_config.yaml names these builders as import paths; their `args` come from the config:

    api  (route /)    Api ingress ──handle──> Summarizer
    ui   (route /ui)  GradioUI    ──handle──> the api application's Summarizer

The UI is its own application so that it can stay at one replica while the API scales out, and it
reaches the same Summarizer replicas as the API (no second copy of the model).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from ray.serve import Application

from backend.api import Api
from backend.summarizer import Summarizer
from shared.config import Limits
from ui.app import GradioUI

API_APP = "api"


class ApiArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limits: Limits = Limits()


class UiArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limits: Limits = Limits()
    backend_app: str = API_APP
    # Summaries running at once across all UI users; beyond it Gradio queues them and shows the position.
    concurrency_limit: int = 8


def build_api(args: dict) -> Application:
    settings = ApiArgs.model_validate(args)
    return Api.bind(Summarizer.bind(), settings.limits)


def build_ui(args: dict) -> Application:
    settings = UiArgs.model_validate(args)
    return GradioUI.bind(settings.backend_app, settings.limits, settings.concurrency_limit)
