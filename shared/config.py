"""Settings both the API and the UI enforce, with their defaults for the embedded (one laptop) mode."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Limits(BaseModel):
    """Input caps. The API answers 413 over them; the UI shows the same message."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # ~15k words: far beyond a news article, small enough that one request cannot hog a replica.
    max_text_chars: int = Field(100_000, ge=1)
    # How long each route waits on the model deployments before answering 503 (the UI: a message). A
    # summary of a long article takes seconds; a photo takes well under one, but a call that a killed
    # replica dropped is retried on its replacement, which takes a while to start (15 s on 2 idle cores,
    # 30-50 s on 2 busy ones).
    summary_timeout_s: float = Field(120.0, gt=0)  # GET /Summarizer, POST /api/v1/summarize, the UI's Summarize
    photo_timeout_s: float = Field(45.0, gt=0)  # POST /predict/, POST /api/v1/photos, the UI's Find
    gallery_add_timeout_s: float = Field(45.0, gt=0)  # POST /api/v1/gallery, the UI's Add
    # A photo or summary is taken on only while the ones in flight predict its answer within this; past
    # it the caller is told at once to try again (503 with Retry-After; the UI: a message) rather than
    # waiting behind work that cannot finish in time (backend/admission.py). None: no such check.
    admit_within_s: float | None = Field(8.0, gt=0)

    # Images: bytes of the encoded file, and pixels of the decoded image (a small file can decode
    # to gigabytes: a decompression bomb).
    max_image_bytes: int = Field(10 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(40_000_000, ge=1)
    # Several photos at once (POST /api/v1/photos/batch, the UI's Dog photo tab): how many, and their
    # bytes together.
    max_batch_photos: int = Field(32, ge=1)
    max_batch_bytes: int = Field(64 * 1024 * 1024, ge=1)

    # Article URLs: the page's bytes (HTML or plain text), before it is reduced to its text.
    max_page_bytes: int = Field(5 * 1024 * 1024, ge=1)

    # URLs fetched (images and articles).
    url_timeout_s: float = Field(10.0, gt=0)
    url_max_redirects: int = Field(3, ge=0)
    # Addresses that may be fetched although they are not public, as "host:port" or a CIDR network
    # ("127.0.0.1:8123", "10.0.0.0/8"). Empty: only public internet addresses.
    url_allowlist: tuple[str, ...] = ()
