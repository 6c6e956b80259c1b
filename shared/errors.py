"""What can go wrong for a user, as domain errors: each says in a sentence what is wrong and carries
no HTTP status. The faces decide how to show them (backend/api/errors.py, ui/callbacks.py)."""

from __future__ import annotations

# Seconds a client is told to wait before trying again when nothing more precise is known.
DEFAULT_RETRY_AFTER_S = 5.0


class InvalidArticle(ValueError):
    """Text that cannot be summarized: empty, not text, or nothing to summarize in it."""


class BlockedArticleUrl(InvalidArticle):
    """An article URL that is refused like a BlockedUrl: not http(s), a non-public address, or too many redirects."""


class ArticleTooLong(InvalidArticle):
    """Text over the configured limit."""


class InvalidImage(ValueError):
    """A photo that cannot be used: not an image, unreadable, or not fetchable."""


class ImageTooLarge(InvalidImage):
    """A file or a decoded image over the configured limits."""


class TooManyPhotos(ValueError):
    """A batch of photos over the configured count or total size."""


class UrlRefused(InvalidImage):
    """An image URL that was not fetched or could not be; `reason`: a short name for counting them."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self):  # across processes with its reason
        return type(self), (str(self), self.reason)


class BlockedUrl(UrlRefused):
    """An image URL that is refused: not http(s), a non-public address, or too many redirects."""


class UnreachableUrl(UrlRefused):
    """An image URL that was tried and failed: no answer, a host that does not resolve, an error status."""


class UnknownBreed(ValueError):
    """A breed to explain that the serving model does not know."""


class PhotoNotFound(LookupError):
    """A gallery photo id that names no photo."""


class InvalidLabel(ValueError):
    """A gallery label that cannot be stored: control characters, or too long."""


class IdempotencyConflict(ValueError):
    """An Idempotency-Key sent again with other content than the first time."""


class NotAuthenticated(PermissionError):
    """A request without a known API key where one is needed."""


class NotAllowed(PermissionError):
    """A request whose API key lacks the scope the route needs."""


class RateLimited(Exception):
    """A caller over its request rate; `retry_after_s`: when its next request is allowed."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def __reduce__(self):
        return type(self), (str(self), self.retry_after_s)


class BackendUnavailable(Exception):
    """A model deployment could not take or finish the call now (busy, restarting, its database down, or
    no answer in time); trying again later may work. `retry_after_s`: when; `reason`: a short name for
    counting them (deadline, queue_full, not_deployed, replica_died, timeout, database_down)."""

    def __init__(self, message: str, retry_after_s: float = DEFAULT_RETRY_AFTER_S, reason: str = "unavailable") -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.reason = reason

    def __reduce__(self):  # a replica's refusal reaches the caller whole
        return type(self), (str(self), self.retry_after_s, self.reason)


class BackendTimeout(BackendUnavailable):
    """A model deployment did not answer within the route's time."""

    def __init__(self, message: str, retry_after_s: float = DEFAULT_RETRY_AFTER_S, reason: str = "timeout") -> None:
        super().__init__(message, retry_after_s, reason)
