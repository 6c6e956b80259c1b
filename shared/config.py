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

    # Images: bytes of the encoded file, and pixels of the decoded image (a small file can decode
    # to gigabytes: a decompression bomb).
    max_image_bytes: int = Field(10 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(40_000_000, ge=1)

    # Image URLs.
    url_timeout_s: float = Field(10.0, gt=0)
    url_max_redirects: int = Field(3, ge=0)
    # Addresses that may be fetched although they are not public, as "host:port" or a CIDR network
    # ("127.0.0.1:8123", "10.0.0.0/8"). Empty: only public internet addresses.
    url_allowlist: tuple[str, ...] = ()
