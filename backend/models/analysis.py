"""What a vision model says about an image: plain data, no torch, so that the faces and the gallery
read an answer without loading a model runtime (the Vision replicas hold the only torch)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ImageAnalysis:
    """What one forward pass says about one image."""

    embedding: np.ndarray  # float32, L2-normalised
    breed_probabilities: np.ndarray  # p(label | dog) over `labels`, sums to 1
    labels: tuple[str, ...]  # the model's breeds, in its output order
    dog_score: float  # total probability of the ImageNet dog classes
    is_dog: bool  # dog_score at or over the model's threshold
    best_guess: str  # the most likely of all 1,000 ImageNet classes ("bald eagle"), for "not a dog" messages
    model: str  # which model answered: "dog-breeds/3" for a registered version
    embedder: str  # which embedding space `embedding` is in (the gallery keeps one per embedder)

    def top_breeds(self, count: int) -> list[tuple[str, float]]:
        order = np.argsort(-self.breed_probabilities)[:count]
        return [(self.labels[i], float(self.breed_probabilities[i])) for i in order]


@dataclass(frozen=True)
class Explanation:
    """Where the model looked for one breed: a Grad-CAM heat map over its last convolutional features,
    or, for a model that has none (CLIP), why there is no map."""

    breed: str | None  # the breed explained
    probability: float | None  # its p(breed | dog)
    heat: np.ndarray | None  # float32 (h, w) in 0..1 over the model input, 1 where the evidence is strongest
    unavailable: str | None = None  # why there is no map
