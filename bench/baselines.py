"""The baselines: the same model code the deployments run, called in-process with no serving at all.
Run as a process of its own by the harness (one command per baseline, JSON on stdout), so that each
starts clean and the harness holds no model.

    python -m bench.baselines pipeline --requests 50
    python -m bench.baselines batched --seconds 20
    python -m bench.baselines extractive --requests 30
    python -m bench.baselines build-t5 DIR && python -m bench.baselines abstractive DIR --requests 5
    python -m bench.baselines search --sizes 10000,100000,1000000
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import typer

from bench.load import ARTICLE_600, PHOTO
from bench.stats import latency_summary

ROOT = Path(__file__).resolve().parent.parent
SEED_DIR = ROOT / "backend" / "gallery_seed"
# Defaults only: the harness passes what the Serve config gives the Vision and Summarizer deployments.
TORCH_THREADS = 1

cli = typer.Typer(add_completion=False, no_args_is_help=True)


def emit(result: dict) -> None:
    print(json.dumps(result))


def timed_ms(call: Callable[[], object], count: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return times


def _vision(threads: int):
    """The model the Vision deployment serves on a first start: the packaged one, registered in a
    registry of its own and loaded from it (the exported graph, not the eager network)."""
    import os
    import shutil
    import tempfile

    import torch

    data_dir = tempfile.mkdtemp(prefix="retriever-bench-registry-")
    os.environ["RETRIEVER_DATA_DIR"] = data_dir
    try:
        from backend.models.registry import DEFAULT_MODEL, Registry

        torch.set_num_threads(threads)
        registry = Registry(None)
        registry.ensure_packaged()
        return registry.load(registry.resolve(DEFAULT_MODEL))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@cli.command()
def pipeline(requests: int = 50, threads: int = TORCH_THREADS, matches: int = 5) -> None:
    """B1's baseline: one dog photo, decode + reduce + model + gallery search, in one process."""
    from backend.models.index import VectorIndex, labelled_images
    from shared.config import Limits
    from shared.images import decode_image, to_model_input

    model = _vision(threads)
    limits = Limits()
    # The app's gallery on first start: the packaged seed photos.
    seed = [(path, label) for path, label in labelled_images(SEED_DIR)]
    analyses = model.analyse([to_model_input(decode_image(p.read_bytes(), limits), model.input_spec) for p, _ in seed])
    index = VectorIndex(model.embedding_dim)
    index.extend((i + 1, label, a.embedding) for i, ((_, label), a) in enumerate(zip(seed, analyses)))
    data = PHOTO.read_bytes()

    def one_photo() -> None:
        pixels = to_model_input(decode_image(data, limits), model.input_spec)
        (analysis,) = model.analyse([pixels])
        index.search(analysis.embedding, matches, [breed for breed, _ in analysis.top_breeds(4)])

    pixels = to_model_input(decode_image(data, limits), model.input_spec)
    emit(
        {
            "threads": threads,
            "gallery_photos": len(index),
            "latency_ms": latency_summary(timed_ms(one_photo, requests)),
            "decode_ms": latency_summary(
                timed_ms(lambda: to_model_input(decode_image(data, limits), model.input_spec), requests)
            ),
            "model_ms": latency_summary(timed_ms(lambda: model.analyse([pixels]), requests)),
        }
    )


@cli.command()
def batched(seconds: float = 20, batch: int = 8, threads: int = TORCH_THREADS, passes: int = 1) -> None:
    """B2's baseline: the model alone on full batches, back to back, `passes` at once as the Vision
    deployment runs them (images/s)."""
    from concurrent.futures import ThreadPoolExecutor

    from shared.config import Limits
    from shared.images import decode_image, to_model_input

    model = _vision(threads)
    pixels = to_model_input(decode_image(PHOTO.read_bytes(), Limits()), model.input_spec)
    images = [pixels] * batch
    model.analyse(images)
    started, cpu_started = time.perf_counter(), time.process_time()

    def run_passes() -> int:
        done = 0
        while time.perf_counter() - started < seconds:
            model.analyse(images)
            done += batch
        return done

    with ThreadPoolExecutor(passes) as pool:
        done = sum(pool.map(lambda _: run_passes(), range(passes)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    emit(
        {
            "threads": threads,
            "passes": passes,
            "batch": batch,
            "images": done,
            "elapsed_s": round(elapsed, 2),
            "throughput_ips": round(done / elapsed, 2),
            # The forward pass's own CPU per image: what P2 subtracts from the app's CPU per photo.
            "cpu_ms_per_image": round(cpu / done * 1000, 2),
        }
    )


@cli.command()
def extractive(requests: int = 30, threads: int = TORCH_THREADS, runtime: str = "onnx") -> None:
    """B4's baselines: the extractive summary of the ~600-word article, in-process, with the sentence encoder
    on ONNX Runtime (the app's default) or on sentence-transformers (the path before it, P5's baseline)."""
    from backend.data import default_model_cache_dir
    from backend.models.text import ExtractiveSummarizer

    if runtime == "torch":
        import torch

        torch.set_num_threads(threads)
    model = ExtractiveSummarizer.load(runtime=runtime, threads=threads, cache_dir=default_model_cache_dir())
    article = ARTICLE_600.read_text(encoding="utf-8")
    emit(
        {
            "runtime": runtime,
            "words": len(article.split()),
            "summary": model.summarize(article).text,  # the runtimes must pick the same sentences
            "latency_ms": latency_summary(timed_ms(lambda: model.summarize(article), requests)),
        }
    )


# t5-small's shape and its published summarization settings; the weights are random (no checkpoint
# installs offline), which is fine for timing: the work per token is the same.
T5_SMALL = dict(vocab_size=32128, d_model=512, d_ff=2048, d_kv=64, num_layers=6, num_decoder_layers=6, num_heads=8)
T5_SUMMARIZATION = {
    "early_stopping": True,
    "length_penalty": 2.0,
    "max_length": 200,
    "min_length": 30,
    "no_repeat_ngram_size": 3,
    "num_beams": 4,
    "prefix": "summarize: ",
}


@cli.command("build-t5")
def build_t5(path: Path) -> None:
    """Save a t5-small-shaped checkpoint with random weights and a word-level tokenizer of t5-small's
    vocabulary size (the bench article's words, then filler), like a hub checkpoint."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GenerationConfig, PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    words = sorted(set(ARTICLE_600.read_text(encoding="utf-8").split()) | {"summarize:"})
    vocab_words = ["<pad>", "</s>", "<unk>", *words]
    vocab_words += [f"<filler_{i}>" for i in range(T5_SMALL["vocab_size"] - len(vocab_words))]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab_words)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=512
    ).save_pretrained(path)
    torch.manual_seed(0)
    config = T5Config(
        **T5_SMALL,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        task_specific_params={"summarization": T5_SUMMARIZATION},
    )
    network = T5ForConditionalGeneration(config)
    network.generation_config = GenerationConfig(decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    network.save_pretrained(path)
    emit({"path": str(path), "parameters": sum(p.numel() for p in network.parameters())})


@cli.command()
def abstractive(
    path: Path, requests: int = 5, threads: int = TORCH_THREADS, num_beams: int = 1, first_chunk_tokens: int = 0
) -> None:
    """B4's abstractive baseline: time to the first streamed piece and to the whole summary
    (`first_chunk_tokens` 0: a full first window)."""
    import torch

    from backend.models.text import Seq2SeqSummarizer

    torch.set_num_threads(threads)
    model = Seq2SeqSummarizer.load(path, num_beams=num_beams)
    model.first_chunk_tokens = first_chunk_tokens or None
    article = ARTICLE_600.read_text(encoding="utf-8")
    first, total, pieces = [], [], 0
    for i in range(requests + 1):
        started = time.perf_counter()
        first_at = None
        for pieces, _piece in enumerate(model.stream(article), start=1):  # noqa: B007 (the count is read after)
            if first_at is None:
                first_at = (time.perf_counter() - started) * 1000
        if i:  # the first run warms up
            first.append(first_at)
            total.append((time.perf_counter() - started) * 1000)
    emit(
        {
            "num_beams": num_beams,
            "chunks": len(model.preprocess(article)),
            "pieces": pieces,
            "first_piece_ms": latency_summary(first),
            "total_ms": latency_summary(total),
        }
    )


def clustered_vectors(count: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """Unit vectors in `clusters` clusters, non-negative like pooled CNN features: what a gallery of
    many photos of a few hundred kinds of things looks like to the index."""
    rng = np.random.default_rng(seed)
    centres = rng.gamma(1.0, 1.0, (clusters, dim)).astype(np.float32)
    vectors = np.empty((count, dim), dtype=np.float32)
    for start in range(0, count, 50_000):
        stop = min(count, start + 50_000)
        vectors[start:stop] = centres[rng.integers(0, clusters, stop - start)]
        vectors[start:stop] += rng.gamma(1.0, 0.6, (stop - start, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


@cli.command()
def search(
    sizes: str = "10000,100000,1000000", queries: int = 200, dim: int = 1280, clusters: int = 1000, k: int = 10
) -> None:
    """B5: the gallery's index (backend.models.index.VectorIndex) over clustered vectors: exact search
    and ANN, latency per query and ANN recall@k against the exact answer."""
    from backend.models.index import VectorIndex

    results = []
    for size in (int(s) for s in sizes.split(",")):
        vectors = clustered_vectors(size + queries, dim, clusters, seed=size)
        probes, vectors = vectors[size:], vectors[:size]
        ids = np.arange(1, size + 1, dtype=np.int64)
        # One index: its ANN answers `search`, its exact path (the full matrix product it falls back to
        # below ann_threshold) gives the truth. Two would hold 1M x 1280 floats three times over.
        started = time.perf_counter()
        index = VectorIndex(dim, ann_threshold=1)
        index.extend_arrays(ids, [None] * size, vectors)
        build_s = time.perf_counter() - started
        # The floor exact search cannot beat: one read of the float32 matrix (a sum over it).
        floor_ms = latency_summary(timed_ms(lambda v=vectors: float(v.sum()), 20))
        del vectors
        # All exact queries, then all ANN ones: interleaved, FAISS's spinning OpenMP threads slow numpy.
        truth, exact_ms, found, ann_ms = [], [], [], []
        for probe in probes:
            began = time.perf_counter()
            truth.append({m.id for m in index._exact(probe / np.linalg.norm(probe), k, None)})
            exact_ms.append((time.perf_counter() - began) * 1000)
        for probe in probes:
            began = time.perf_counter()
            found.append({m.id for m in index.search(probe, k)})
            ann_ms.append((time.perf_counter() - began) * 1000)
        recall = float(np.mean([len(f & t) / k for f, t in zip(found, truth)]))
        results.append(
            {
                "vectors": size,
                "dim": dim,
                "exact_ms": latency_summary(exact_ms),
                "matrix_read_ms": floor_ms,
                "ann_ms": latency_summary(ann_ms),
                "ann_recall_at_k": round(recall, 4),
                "ann_build_s": round(build_s, 1),
                "ann": index.describe(),
            }
        )
        del index
    emit({"k": k, "queries": queries, "clusters": clusters, "sizes": results})


@cli.command()
def floor() -> None:
    """P7's floor: one process importing what the app's processes import and loading both models as the
    replicas do (the breed model from the registry in $RETRIEVER_DATA_DIR, which the app's first run
    filled; the sentence encoder). The harness times this process from start to exit."""
    started = time.perf_counter()
    import torch  # noqa: F401
    from ray import serve  # noqa: F401

    import backend.api.ingress  # noqa: F401
    import ui.app  # noqa: F401
    from backend.data import default_model_cache_dir
    from backend.models.registry import DEFAULT_MODEL, Registry
    from backend.models.text import ExtractiveSummarizer

    imported = time.perf_counter()
    registry = Registry(None)
    registry.load(registry.resolve(DEFAULT_MODEL))
    ExtractiveSummarizer.load(cache_dir=default_model_cache_dir())
    emit({"import_s": round(imported - started, 2), "load_s": round(time.perf_counter() - imported, 2)})


if __name__ == "__main__":
    cli()
