"""What can go wrong for a user, as domain errors: each says in a sentence what is wrong and carries
no HTTP status. The faces decide how to show them (backend/api/errors.py, ui/callbacks.py)."""

from __future__ import annotations

# Seconds a client is told to wait before trying again when nothing more precise is known.
DEFAULT_RETRY_AFTER_S = 5.0


class InvalidArticle(ValueError):
    """Text that cannot be summarized: empty, not text, or nothing to summarize in it."""


class ArticleTooLong(InvalidArticle):
    """Text over the configured limit."""


class InvalidImage(ValueError):
    """A photo that cannot be used: not an image, unreadable, or not fetchable."""


class ImageTooLarge(InvalidImage):
    """A file or a decoded image over the configured limits."""


class BlockedUrl(InvalidImage):
    """An image URL that is refused: not http(s), a non-public address, or too many redirects."""


class UnreachableUrl(InvalidImage):
    """An image URL that was tried and failed: no answer, a host that does not resolve, an error status."""


class PhotoNotFound(LookupError):
    """A gallery photo id that names no photo."""


class BackendUnavailable(Exception):
    """A model deployment could not take or finish the call now (busy, restarting, its database down, or
    no answer in time); trying again later may work. `retry_after_s`: when."""

    def __init__(self, message: str, retry_after_s: float = DEFAULT_RETRY_AFTER_S) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class BackendTimeout(BackendUnavailable):
    """A model deployment did not answer within the route's time."""
