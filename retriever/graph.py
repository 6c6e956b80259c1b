"""Builds the Serve graph: the one place that binds deployments together.

serve_config.yaml names these builders as import paths; their `args` come from the config:

    api  (route /)    Api ingress ──handles──> Summarizer, Vision, Gallery ──> Vision
    ui   (route /ui)  GradioUI    ──handles──> the api application's Summarizer, Vision, Gallery
                              ──handle───> ShareTunnel (only when the UI is shared)

The UI is its own application, with its own request router (a browser session stays on one replica)
and its own settings; it reaches the same model replicas as the API (no second copy of any model).
"""

from __future__ import annotations

from ray.serve import Application

from backend.api.ingress import Api
from backend.deployments.gallery import Gallery
from backend.deployments.summarizer import Summarizer
from backend.deployments.vision import Vision
from retriever.app_args import ApiArgs, UiArgs
from ui.app import GradioUI, ShareTunnel


def build_api(args: dict) -> Application:
    settings = ApiArgs.model_validate(args)
    vision = Vision.bind()
    gallery = Gallery.bind(vision, settings.gallery)
    return Api.bind(Summarizer.bind(), vision, gallery, settings.limits)


def build_ui(args: dict) -> Application:
    settings = UiArgs.model_validate(args)
    # The UI reaches the api application's deployments by name: they are deployed by build_api.
    backends = {"summarizer": Summarizer.name, "vision": Vision.name, "gallery": Gallery.name}
    # One public link for every UI replica, when the UI is shared.
    tunnel = ShareTunnel.bind(settings.share) if settings.share.enabled else None
    return GradioUI.bind(
        settings.backend_app,
        backends,
        settings.limits,
        settings.concurrency_limit,
        settings.max_queue_size,
        settings.login,
        settings.rate_limit,
        tunnel,
        settings.share.timeout_s,
    )
