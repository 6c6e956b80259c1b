"""Sentence embeddings on ONNX Runtime: pure model code (no ray, no fastapi).

A sentence-transformers checkpoint made of a transformer, mean pooling and (optionally) normalisation is
served without torch: the transformer is exported to ONNX once, with torch, and cached; at run time ONNX
Runtime runs it, the `tokenizers` library tokenizes, and numpy pools. The embeddings equal
sentence-transformers' within 1e-5 (tests/unit/test_sentence_encoder.py) in about 0.6x of its time on
2 cores, and the process that runs it never imports torch (the export runs in a child process).

    load(model_path, cache_dir, threads)   the cached export, or export it first (classmethod)
    preprocess(sentences)                   token ids in batches of similar length
    forward(batch)                          the transformer's token embeddings
    postprocess(tokens, mask)               mean pooling, then unit length
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Bumped when the exported graph changes, so an old cached file is not reused.
EXPORT_FORMAT = "retriever-onnx-1"
OPSET = 17


def _modules(model_path: Path) -> list[dict[str, Any]]:
    modules_file = model_path / "modules.json"
    return json.loads(modules_file.read_text()) if modules_file.exists() else []


def supports(model_path: str | Path) -> bool:
    """Whether the checkpoint is a transformer, mean pooling and at most a normalisation: what this
    encoder reproduces. Others (CLS pooling, a Dense layer, ...) stay on sentence-transformers."""
    model_path = Path(model_path)
    kinds = [module["type"].rsplit(".", 1)[-1] for module in _modules(model_path)]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        return False
    pooling = json.loads((model_path / _modules(model_path)[1]["path"] / "config.json").read_text())
    modes = {key for key, value in pooling.items() if key.startswith("pooling_mode") and value}
    return modes == {"pooling_mode_mean_tokens"}


def _transformer_dir(model_path: Path) -> Path:
    return model_path / _modules(model_path)[0]["path"]


def _max_tokens(model_path: Path) -> int:
    for name in ("sentence_bert_config.json", _transformer_dir(model_path) / "sentence_bert_config.json"):
        config_file = model_path / name
        if config_file.exists():
            return int(json.loads(config_file.read_text())["max_seq_length"])
    return 512


def _checkpoint_digest(model_path: Path) -> str:
    """What the export is made from: the transformer's config and weights, and the export's format."""
    digest = hashlib.sha256(EXPORT_FORMAT.encode())
    directory = _transformer_dir(model_path)
    for path in (
        sorted(directory.glob("*.json")) + sorted(directory.glob("*.safetensors")) + sorted(directory.glob("*.bin"))
    ):
        with path.open("rb") as file:
            digest.update(path.name.encode() + hashlib.file_digest(file, "sha256").digest())
    return digest.hexdigest()[:16]


def export_onnx(model_path: str | Path, target: Path) -> None:
    """Export the checkpoint's transformer (token embeddings out) to `target`, with torch. The file
    appears whole or not at all, so replicas starting together never read a half-written one."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    directory = _transformer_dir(Path(model_path))
    network = AutoModel.from_pretrained(str(directory)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    sample = dict(
        tokenizer(["An example sentence.", "And a second, longer example sentence."], padding=True, return_tensors="pt")
    )
    names = list(sample)  # input_ids, attention_mask and token_type_ids where the model takes them

    class TokenEmbeddings(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.network(**dict(zip(names, inputs))).last_hidden_state

    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=target.parent, suffix=".partial")
    os.close(handle)
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # the TorchScript exporter's notices, not the user's concern
            torch.onnx.export(
                TokenEmbeddings(),
                tuple(sample[name] for name in names),
                partial,
                input_names=names,
                output_names=["token_embeddings"],
                dynamic_axes={name: {0: "batch", 1: "tokens"} for name in names},
                opset_version=OPSET,
                dynamo=False,
            )
        os.replace(partial, target)
    finally:
        Path(partial).unlink(missing_ok=True)


@dataclass
class OnnxSentenceEncoder:
    """Unit-length sentence embeddings, as `SentenceTransformer.encode(..., normalize_embeddings=True)`."""

    session: Any  # an onnxruntime.InferenceSession
    tokenizer: Any  # a tokenizers.Tokenizer: truncates to the model's limit, pads a batch to its longest
    batch_size: int = 4

    @classmethod
    def load(cls, model_path: str | Path, cache_dir: str | Path, threads: int = 1) -> OnnxSentenceEncoder:
        import onnxruntime
        from tokenizers import Tokenizer

        model_path = Path(model_path)
        exported = Path(cache_dir) / f"{model_path.name}-{_checkpoint_digest(model_path)}.onnx"
        if not exported.exists():
            # In a child process, so that torch (~300 MB) never stays in this one.
            exporter = multiprocessing.get_context("spawn").Process(target=export_onnx, args=(model_path, exported))
            exporter.start()
            exporter.join()
            if exporter.exitcode != 0:
                raise RuntimeError(f"exporting {model_path} to ONNX failed (exit code {exporter.exitcode})")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle threads sleep instead of spinning: on a few cores the spin takes CPU the other replicas need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = onnxruntime.InferenceSession(str(exported), options, providers=["CPUExecutionProvider"])
        tokenizer = Tokenizer.from_file(str(_transformer_dir(model_path) / "tokenizer.json"))
        tokenizer.enable_truncation(_max_tokens(model_path))
        tokenizer.enable_padding()
        return cls(session, tokenizer)

    def preprocess(self, sentences: list[str]) -> Iterator[tuple[list[int], dict[str, np.ndarray]]]:
        """Batches of sentences of similar length (the rows they fill, the model's inputs): a batch is
        padded to its longest sentence, so mixing a short sentence with a long one wastes work."""
        order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
        wanted = {model_input.name for model_input in self.session.get_inputs()}
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            encodings = self.tokenizer.encode_batch([sentences[i] for i in rows])
            inputs = {
                "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
            }
            yield rows, {name: array for name, array in inputs.items() if name in wanted}

    def forward(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(["token_embeddings"], inputs)[0]

    def postprocess(self, token_embeddings: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        mask = attention_mask[..., None].astype(np.float32)
        pooled = (token_embeddings * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def encode(self, sentences: list[str]) -> np.ndarray:
        embeddings: np.ndarray | None = None
        for rows, inputs in self.preprocess(sentences):
            pooled = self.postprocess(self.forward(inputs), inputs["attention_mask"])
            if embeddings is None:
                embeddings = np.empty((len(sentences), pooled.shape[1]), dtype=np.float32)
            embeddings[rows] = pooled
        return embeddings if embeddings is not None else np.empty((0, 0), dtype=np.float32)
