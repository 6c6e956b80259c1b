"""Types the faces (API and UI) and the model deployments both speak, and the article check both faces
make before a summary is asked for."""

from __future__ import annotations

import unicodedata

from pydantic import BaseModel, ConfigDict, Field

from shared.config import Limits
from shared.errors import ArticleTooLong, InvalidArticle


def validate_article(text: str, limits: Limits) -> str:
    """Return `text` if it is something worth summarizing, else raise with a message for the user."""
    if len(text) > limits.max_text_chars:
        raise ArticleTooLong(f"The article is {len(text):,} characters long; the limit is {limits.max_text_chars:,}.")
    if not text.strip():
        raise InvalidArticle("The article is empty: paste some text to summarize.")
    # Binary data read as text shows up as control characters or U+FFFD replacement characters.
    if any(ch == "\ufffd" or (unicodedata.category(ch) == "Cc" and ch not in "\t\n\r") for ch in text):
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


class SummaryResult(BaseModel):
    """What a summarizer replica returns."""

    summary: str
    model: str = Field(description="Which summarizer wrote it, e.g. extractive/all-MiniLM-L6-v2.")
    pieces: int = Field(description="Sentences kept (extractive) or chunks summarized (seq2seq).")
    model_ms: float = Field(description="Time spent in the model, in the replica.")
    sentences: list[str] | None = Field(
        None, description="Extractive: the article's sentences the summary is made of, in its order; seq2seq: null."
    )


class DeploymentStatus(BaseModel):
    ready: bool
    model: str | None = None
    detail: str | None = None


class Readiness(BaseModel):
    ready: bool
    deployments: dict[str, DeploymentStatus]
    # Where Prometheus scrapes this node (Ray's metrics agent: the app's, Ray's and Serve's metrics).
    metrics_url: str | None = None
