"""B3's baseline: the serving design of the Ray tutorial this project grew from ("doggos", Ray's
e2e-multimodal-ai-workloads example, doggos/serve.py), re-created faithfully on our model
(EfficientNet-Lite0 instead of CLIP, on CPU instead of an L4), so that only the design differs:

- `POST /predict/ {"url", "k"}` on a `Doggos` ingress calls `ClassPredictor.get_probabilities(url)`,
  then `EmbeddingSimilarity.get_top_matches(url, probabilities, k)`;
- ClassPredictor fetches the URL and runs a Ray Data pipeline per request: `from_items` -> `map`
  (label conversion) -> `map_batches` with a class UDF that loads the embedding model (concurrency=1,
  batch_size=1) -> `map_batches(predict_probabilities)` -> `take_all()`;
- EmbeddingSimilarity fetches the URL again, embeds the image a second time, and reads every stored
  embedding (`embeddings_ds.take_all()` over the Parquet files) to filter by the top-k breeds and rank by
  cosine distance (scipy's cdist, as the tutorial).

    python -m bench.tutorial --port 8100 --embeddings DIR   # serves until SIGTERM

`--embeddings DIR` is written first with `python -m bench.tutorial --write-embeddings DIR`: the seed
gallery's photos, embedded once, as Parquet (the tutorial's batch-inference output).
"""

import io
import shutil
import signal
import threading
from pathlib import Path

import numpy as np
import typer

# Module level and no `from __future__ import annotations`: Serve ships the ingress class to its replica
# by value, and FastAPI must resolve the route's `Request` annotation there.
from starlette.requests import Request

ROOT = Path(__file__).resolve().parent.parent
SEED_DIR = ROOT / "backend" / "gallery_seed"
THREADS = 2  # torch threads, as our Vision deployment


def url_to_array(url: str) -> np.ndarray:
    """The tutorial's helper: download and decode, no limits (the bench only serves loopback URLs)."""
    import httpx
    from PIL import Image

    return np.array(Image.open(io.BytesIO(httpx.get(url, timeout=60).content)).convert("RGB"))


class EmbeddingGenerator:
    """The tutorial's embedding UDF, on our backbone: the model loads in the constructor."""

    def __init__(self) -> None:
        import torch

        from backend.models.vision import BreedClassifier

        torch.set_num_threads(THREADS)
        self.model = BreedClassifier.packaged()

    def __call__(self, batch: dict) -> dict:
        import torch
        from PIL import Image

        from shared.images import to_model_input

        pixels = [to_model_input(Image.fromarray(np.uint8(image)), self.model.input_spec) for image in batch["image"]]
        with torch.inference_mode():
            batch["embedding"] = self.model.network.features(self.model.preprocess(pixels)).numpy()
        batch.pop("image")  # the tutorial's drop_columns(["image"])
        return batch


class Predictor:
    """The tutorial's TorchPredictor: the classification head on an embedding."""

    def __init__(self) -> None:
        from backend.models.vision import BreedClassifier

        model = BreedClassifier.packaged()
        self.head, self.labels = model.network.head, model.labels

    def predict_probabilities(self, batch: dict) -> dict:
        import torch

        with torch.inference_mode():
            probabilities = torch.softmax(self.head(torch.as_tensor(np.stack(batch["embedding"]))), dim=-1).numpy()
        batch["probabilities"] = [dict(zip(self.labels, map(float, row))) for row in probabilities]
        return batch


def get_top_matches(query_embedding, embeddings_ds, class_filters=None, n=4) -> list[dict]:
    """As the tutorial's: every stored row read, filtered, ranked by cosine distance."""
    from scipy.spatial.distance import cdist

    rows = embeddings_ds.take_all()
    if class_filters:
        rows = [r for r in rows if r["class"] in set(class_filters)]
    if not rows:
        return []
    embeddings = np.vstack([r["embedding"] for r in rows]).astype(np.float32)
    sims = 1 - cdist([query_embedding], embeddings, metric="cosine")[0]
    k = min(n, sims.size)
    idx = np.argpartition(-sims, k - 1)[:k]
    idx = idx[np.argsort(-sims[idx])]
    return [{"class": rows[i]["class"], "path": rows[i]["path"], "similarity": float(sims[i])} for i in idx]


def build_app(embeddings_path: str):
    import ray
    from fastapi import FastAPI
    from ray import serve

    api = FastAPI(title="doggos (the tutorial's design)")

    @serve.deployment(ray_actor_options={"num_cpus": 0.5})
    class ClassPredictor:
        def __init__(self) -> None:
            self.predictor = Predictor()

        def get_probabilities(self, url: str) -> dict:
            image = url_to_array(url=url)
            ds = ray.data.from_items([{"image": image, "url": url}])
            ds = ds.map(lambda row: row)  # the tutorial's convert_to_label (no class on a query)
            ds = ds.map_batches(EmbeddingGenerator, concurrency=1, batch_size=1)
            ds = ds.map_batches(self.predictor.predict_probabilities, concurrency=1, batch_size=1)
            return ds.take_all()[0]["probabilities"]

    @serve.deployment(ray_actor_options={"num_cpus": 0.5})
    class EmbeddingSimilarity:
        def __init__(self, embeddings_path: str) -> None:
            self.embedding_generator = EmbeddingGenerator()
            self.embeddings_ds = ray.data.read_parquet(embeddings_path)

        def get_top_matches(self, url: str, probabilities: dict, k: int) -> list[dict]:
            top_k = [name for name, _ in sorted(probabilities.items(), key=lambda x: x[1], reverse=True)[:k]]
            image = url_to_array(url=url)
            embedding = self.embedding_generator({"image": [image]})["embedding"][0]
            return get_top_matches(embedding, self.embeddings_ds, class_filters=top_k, n=5)

    @serve.deployment(ray_actor_options={"num_cpus": 0.1})
    @serve.ingress(api)
    class Doggos:
        def __init__(self, classifier, embedder) -> None:
            self.classifier, self.embedder = classifier, embedder

        @api.post("/predict/")
        async def predict(self, request: Request) -> dict:
            data = await request.json()
            probabilities = await self.classifier.get_probabilities.remote(url=data["url"])
            top_matches = await self.embedder.get_top_matches.remote(
                url=data["url"], probabilities=probabilities, k=data["k"]
            )
            return {"probabilities": probabilities, "top_matches": top_matches}

    return Doggos.bind(ClassPredictor.bind(), EmbeddingSimilarity.bind(embeddings_path))


def write_embeddings(path: Path) -> int:
    """The seed gallery (the same photos our app starts with), embedded, as Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from backend.models.index import labelled_images

    generator = EmbeddingGenerator()
    photos = labelled_images(SEED_DIR)
    batch = generator({"image": [url_to_array_file(p) for p, _ in photos]})
    path.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "path": [str(p.relative_to(SEED_DIR)) for p, _ in photos],
            "class": [label or "" for _, label in photos],
            "embedding": [list(map(float, e)) for e in batch["embedding"]],
        }
    )
    pq.write_table(table, path / "embeddings.parquet")
    return len(photos)


def url_to_array_file(path: Path) -> np.ndarray:
    from PIL import Image

    return np.array(Image.open(path).convert("RGB"))


def main(
    port: int = typer.Option(8100),
    embeddings: Path = typer.Option(..., help="Parquet dir of the gallery's embeddings."),
    write: bool = typer.Option(False, "--write-embeddings", help="Write the embeddings and exit."),
) -> None:
    if write:
        print(f"wrote {write_embeddings(embeddings)} embeddings to {embeddings}")
        return
    from retriever.local import start_private_ray

    # Logical CPUs beyond the 2 real ones: the per-request Ray Data stages need free ones to be
    # scheduled at all (ARCHITECTURE.md), as on the tutorial's larger nodes.
    temp_dir = start_private_ray(num_cpus=4, namespace="tutorial")
    import ray
    from ray import serve

    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(str(embeddings)), route_prefix="/")
        print("ready", flush=True)
        stopped.wait()
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


if __name__ == "__main__":
    typer.run(main)
