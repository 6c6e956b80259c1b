"""The HTTP API's request and response bodies (the tutorials' shapes and /api/v1)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.schemas import SummarizeOptions


class ErrorResponse(BaseModel):
    detail: str = Field(description="What is wrong, in a sentence.")
    request_id: str | None = Field(None, description="The answer's X-Request-ID: quote it in a report.")


class SummarizeRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"text": "Paste an article here. It has sentences.", "options": {"max_sentences": 2}}]
        },
    )

    text: str | None = Field(None, description="The article, plain text.")
    url: str | None = Field(
        None, max_length=2048, description="Or an http(s) URL of the article: fetched and reduced to its text."
    )
    options: SummarizeOptions = Field(default_factory=SummarizeOptions)

    @model_validator(mode="after")
    def one_article(self) -> SummarizeRequest:
        if (self.text is None) == (self.url is None):
            raise ValueError("send the article as `text` or its address as `url` (one of the two)")
        return self


class Timings(BaseModel):
    model_ms: float
    total_ms: float = Field(description="From request received to response ready, in the API.")


class SummarizeResponse(BaseModel):
    summary: str
    model: str
    pieces: int
    sentences: list[str] | None = Field(
        None,
        description="Extractive: the article's sentences the summary is made of, in its order (to highlight "
        "them in the article); an abstractive model writes its own: null.",
    )
    timings: Timings


class PredictRequest(BaseModel):
    """The Ray Serve tutorial's request, plus how many matches to return."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"url": "https://example.com/dog.jpg", "k": 4}]}
    )

    url: str = Field(description="http(s) URL of the photo.", max_length=2048)
    k: int = Field(4, ge=1, le=118, description="How many top breeds filter the gallery search.")
    n: int | None = Field(None, ge=1, le=50, description="How many similar photos (default: the configured 5).")
    explain: bool = Field(False, description="Also answer where the model looked (`explanation`).")
    explain_breed: str | None = Field(
        None, max_length=200, description="The breed to explain (implies explain); default: the top breed."
    )


class PhotoMatch(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: int
    label: str | None = Field(alias="class", description="The photo's breed label (or what it shows), if known.")
    path: str = Field(description="URL of the photo's image on this server.")
    similarity: float = Field(description="Cosine similarity of the embeddings, -1..1.")


class HeatMap(BaseModel):
    """Where the model looked for a breed: Grad-CAM over its last convolutional features."""

    breed: str | None = Field(description="The breed explained; null when there is no map.")
    probability: float | None = Field(description="Its p(breed | dog).")
    heat: list[list[float]] | None = Field(
        description="The map, rows top to bottom, 0..1 (1: the strongest evidence), over the photo's centre "
        "crop that the model reads (7 x 7 for EfficientNet-Lite0 at 224 px)."
    )
    image: str | None = Field(description="A data:image/png;base64 URL: that crop with the map drawn over it.")
    unavailable: str | None = Field(None, description="Why there is no map (CLIP has no convolutional features).")


class PredictResponse(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    probabilities: dict[str, float] = Field(description="p(breed | dog) for the 118 ImageNet breeds, highest first.")
    top_matches: list[PhotoMatch]
    dog_score: float = Field(description="Total probability of the dog classes; below the threshold it is not a dog.")
    is_dog: bool
    best_guess: str = Field(description="The most likely of the 1,000 ImageNet classes.")
    model: str
    explanation: HeatMap | None = Field(None, description="Where the model looked; only when asked (`explain`).")


class BatchPhotoResult(BaseModel):
    """One photo of a batch: its answer, or why it has none (the other photos are answered all the same)."""

    filename: str | None = Field(description="The part's file name, as sent.")
    status: int = Field(description="200, or the status this photo alone would have had (413, 422, 503).")
    error: str | None = Field(None, description="What is wrong with this photo, in a sentence.")
    is_dog: bool | None = None
    dog_score: float | None = None
    best_guess: str | None = Field(None, description="The most likely of the 1,000 ImageNet classes.")
    breeds: dict[str, float] | None = Field(None, description="The most likely breeds, highest first (`top`).")
    model: str | None = None


class BatchResponse(BaseModel):
    results: list[BatchPhotoResult] = Field(description="One per photo, in the order they were sent.")


class GalleryItem(BaseModel):
    id: int
    label: str | None
    label_source: str = Field(description="folder, user, predicted or none")
    source: str = Field(description="Where the photo came from: upload:<file name>, url:<URL>, seed:, file:")
    added_by: str | None = Field(description="The API key's name that added it (ui, retriever index; null: open API)")
    added_at: str
    path: str = Field(description="URL of the photo's image on this server.")


class GalleryList(BaseModel):
    total: int = Field(description="Photos that match the filter, on all pages.")
    offset: int
    limit: int
    photos: list[GalleryItem] = Field(description="Newest first.")


class RelabelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"label": "malamute"}]})

    label: str | None = Field(
        description="The new label (at most 100 characters, no control characters); null or empty: none."
    )
