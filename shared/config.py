"""Settings both the API and the UI enforce, with their defaults for the embedded (one laptop) mode."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Limits(BaseModel):
    """Input caps. The API answers 413 over them; the UI shows the same message."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # ~15k words: far beyond a news article, small enough that one request cannot hog a replica.
    max_text_chars: int = Field(100_000, ge=1)
    # How long the UI and the API wait on a backend before giving up with a clear error.
    request_timeout_s: float = Field(120.0, gt=0)
