"""Calling the model deployments, for both faces (API and UI): a call a dead replica dropped is sent once
more, and Serve's ways of saying "not now" become one error that each face shows its own way.

Serve routes a retried call to a live replica, or holds it until the replacement of a killed one is up,
so a retry inside the route's timeout turns a crashed replica into a slower answer instead of a failure.
Only calls that are safe to repeat are retried: reading the model or the gallery, never a gallery add
(a replica that died after committing it would store the photo twice).
"""

from __future__ import annotations

import logging
from typing import Any

from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

logger = logging.getLogger("ray.serve")

# Seconds a client is told to wait before trying again when Serve did not say (a dead replica).
DEFAULT_RETRY_AFTER_S = 5


class BackendUnavailable(Exception):
    """A model deployment could not take or finish the call (HTTP 503); the message is for the user."""

    def __init__(self, message: str, retry_after_s: float = DEFAULT_RETRY_AFTER_S) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def retry_after(self) -> str:
        """The Retry-After header: whole seconds, at least 1."""
        return str(max(1, round(self.retry_after_s)))


# What each model deployment is called in messages to users.
READABLE_NAMES = {"Summarizer": "The summarizer", "Vision": "The vision model", "Gallery": "The gallery"}

# Serve's errors that mean "not now" rather than "your input is wrong".
SERVE_UNAVAILABLE = (BackPressureError, DeploymentUnavailableError, RayActorError)


def explain(exc: BaseException, deployment: str) -> BackendUnavailable:
    """One of SERVE_UNAVAILABLE as a message for the user."""
    name = READABLE_NAMES.get(deployment, f"The {deployment} deployment")
    if isinstance(exc, BackPressureError):
        return BackendUnavailable(f"{name} is busy (its queue is full); try again shortly.", exc.retry_after_s or 1)
    if isinstance(exc, DeploymentUnavailableError):
        return BackendUnavailable(f"{name} is not deployed right now; try again later.")
    return BackendUnavailable(f"{name} stopped during the request and is restarting; try again shortly.")


async def _remote(method: Any, *args: Any) -> Any:
    try:
        return await method.remote(*args)
    except BackendUnavailable as exc:  # raised by the deployment itself (say, a database it cannot reach)
        cause = getattr(exc, "cause", None)  # Ray re-raises it wrapped, its str() the remote traceback
        raise (cause if isinstance(cause, BackendUnavailable) else exc) from None


async def call(method: Any, *args: Any, retry: bool = True) -> Any:
    """`await method.remote(*args)` on a deployment handle's method (`handle.analyse`); sent once more
    if the replica died under it and `retry` (the call is safe to repeat)."""
    deployment = getattr(method, "deployment_name", "model")
    try:
        return await _remote(method, *args)
    except RayActorError as exc:
        if not retry:
            raise explain(exc, deployment) from exc
        logger.warning("a %s replica died during a call; sending it once more", deployment)
    except SERVE_UNAVAILABLE as exc:
        raise explain(exc, deployment) from exc
    try:
        return await _remote(method, *args)
    except SERVE_UNAVAILABLE as exc:
        raise explain(exc, deployment) from exc
