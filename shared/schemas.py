"""Types the HTTP API, the UI and the backend deployments speak."""

from __future__ import annotations

import unicodedata

from pydantic import BaseModel, ConfigDict, Field

from shared.config import Limits


class InvalidArticle(ValueError):
    """Text that cannot be summarized: empty, not text, or too long."""

    status_code = 422


class ArticleTooLong(InvalidArticle):
    status_code = 413


def error_message(exc: BaseException) -> str:
    """The message of an exception, also when Ray re-raised it from a replica: then str() is the
    remote traceback and the original exception is its `cause`."""
    cause = getattr(exc, "cause", None)
    return str(cause if isinstance(cause, BaseException) else exc)


def validate_article(text: str, limits: Limits) -> str:
    """Return `text` if it is something worth summarizing, else raise with a message for the user."""
    if len(text) > limits.max_text_chars:
        raise ArticleTooLong(
            f"The article is {len(text):,} characters long; the limit is {limits.max_text_chars:,}."
        )
    if not text.strip():
        raise InvalidArticle("The article is empty: paste some text to summarize.")
    # Binary data read as text shows up as control characters or U+FFFD replacement characters.
    if any(
        ch == "\ufffd" or (unicodedata.category(ch) == "Cc" and ch not in "\t\n\r") for ch in text
    ):
        raise InvalidArticle("The article holds control or undecodable characters: send plain text.")
    if not any(ch.isalpha() for ch in text):
        raise InvalidArticle("The article holds no words to summarize.")
    return text


class SummarizeOptions(BaseModel):
    """Per-request settings; unset fields fall back to the deployed summarizer's configuration."""

    model_config = ConfigDict(extra="forbid")

    max_sentences: int | None = Field(None, ge=1, le=50, description="Extractive: sentences to keep.")
    num_beams: int | None = Field(None, ge=1, le=8, description="Seq2seq: beam width (1 streams tokens).")
    max_length: int | None = Field(None, ge=1, le=1024, description="Seq2seq: longest summary per chunk, in tokens.")
    min_length: int | None = Field(None, ge=0, le=1024, description="Seq2seq: shortest summary per chunk, in tokens.")


class SummarizeRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"text": "Paste an article here. It has sentences.", "options": {"max_sentences": 2}}]},
    )

    text: str = Field(description="The article, plain text.")
    options: SummarizeOptions = Field(default_factory=SummarizeOptions)


class SummaryResult(BaseModel):
    """What a summarizer replica returns."""

    summary: str
    model: str = Field(description="Which summarizer wrote it, e.g. extractive/all-MiniLM-L6-v2.")
    pieces: int = Field(description="Sentences kept (extractive) or chunks summarized (seq2seq).")
    model_ms: float = Field(description="Time spent in the model, in the replica.")


class Timings(BaseModel):
    model_ms: float
    total_ms: float = Field(description="From request received to response ready, in the API.")


class SummarizeResponse(BaseModel):
    summary: str
    model: str
    pieces: int
    timings: Timings


class DeploymentStatus(BaseModel):
    ready: bool
    model: str | None = None
    detail: str | None = None


class Readiness(BaseModel):
    ready: bool
    deployments: dict[str, DeploymentStatus]


class ErrorResponse(BaseModel):
    detail: str


# --------------------------------------------------------------------------- dog photos


def gallery_image_path(photo_id: int) -> str:
    """Where the API serves a gallery photo's image."""
    return f"/api/v1/gallery/{photo_id}/image"


class PredictRequest(BaseModel):
    """The Ray Serve tutorial's request, plus how many matches to return."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"url": "https://example.com/dog.jpg", "k": 4}]})

    url: str = Field(description="http(s) URL of the photo.", max_length=2048)
    k: int = Field(4, ge=1, le=118, description="How many top breeds filter the gallery search.")
    n: int | None = Field(None, ge=1, le=50, description="How many similar photos (default: the configured 5).")


class PhotoMatch(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: int
    label: str | None = Field(alias="class", description="The photo's breed label (or what it shows), if known.")
    path: str = Field(description="URL of the photo's image on this server.")
    similarity: float = Field(description="Cosine similarity of the embeddings, -1..1.")


class PredictResponse(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    probabilities: dict[str, float] = Field(description="p(breed | dog) for the 118 ImageNet breeds, highest first.")
    top_matches: list[PhotoMatch]
    dog_score: float = Field(description="Total probability of the dog classes; below the threshold it is not a dog.")
    is_dog: bool
    best_guess: str = Field(description="The most likely of the 1,000 ImageNet classes.")
    model: str


class GalleryItem(BaseModel):
    id: int
    label: str | None
    label_source: str = Field(description="folder, user or predicted")
    source: str
    added_at: str
    path: str
