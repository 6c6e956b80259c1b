"""The vision model: EfficientNet-Lite0's real ImageNet weights on real photos; CLIP on a tiny random
model built here (the code path is real, only its weights are random)."""

import numpy as np
import pytest
import torch

from backend.models.index import labelled_images
from backend.models.vision import BreedClassifier, ClipVision, dog_breeds, imagenet_classes
from shared.config import Limits
from shared.images import decode_image, to_model_input
from tests.conftest import PHOTOS, SEED


@pytest.fixture(scope="module")
def model() -> BreedClassifier:
    torch.set_num_threads(2)
    return BreedClassifier.packaged()


def pixels(model, name: str) -> np.ndarray:
    return to_model_input(decode_image(PHOTOS[name].read_bytes(), Limits()), model.input_spec)


def test_class_list_is_imagenet_in_model_order():
    classes = imagenet_classes()
    assert len(classes) == 1000
    assert (classes[0], classes[151], classes[268], classes[999]) == (
        "tench",
        "Chihuahua",
        "Mexican hairless",
        "toilet tissue",
    )
    assert len(dog_breeds()) == 118


@pytest.mark.parametrize("name", ["dog", "dog2"])
def test_dog_photos_are_husky_type_dogs(model, name):
    (analysis,) = model.analyse([pixels(model, name)])
    assert analysis.is_dog and analysis.dog_score > 0.7
    assert analysis.top_breeds(1)[0][0] in {"malamute", "Siberian husky", "Eskimo dog"}
    assert analysis.breed_probabilities.sum() == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(("name", "guess"), [("cat", "Egyptian cat"), ("giraffe", "zebra"), ("eagle", "kite")])
def test_cat_giraffe_and_eagle_are_not_dogs(model, name, guess):
    (analysis,) = model.analyse([pixels(model, name)])
    assert not analysis.is_dog and analysis.dog_score < 0.1
    assert analysis.best_guess == guess  # what the model thinks it is instead (ImageNet's names)


@pytest.fixture(scope="module")
def seed_embeddings(model) -> dict[str, np.ndarray]:
    """The gallery seed's photos, embedded: file name -> embedding."""
    paths = [path for path, _ in labelled_images(SEED)]
    analyses = model.analyse([to_model_input(decode_image(p.read_bytes(), Limits()), model.input_spec) for p in paths])
    return {path.name: analysis.embedding for path, analysis in zip(paths, analyses)}


BIG_CATS = {"cheetah.jpg", "lion.jpg"}
NOT_DOGS = BIG_CATS | {"chelsea.png", "giraffe.jpg", "eagle.jpg", "horses.jpg"}


@pytest.mark.parametrize(
    ("name", "first", "second"),
    [
        ("dog", {"dog-on-porch.jpg"}, {"dog-in-field.jpg"}),  # its source, then the other dog
        ("dog2", {"dog-in-field.jpg"}, {"dog-on-porch.jpg"}),
        ("cat", {"chelsea.png"}, NOT_DOGS - {"chelsea.png"}),
        ("cheetah", BIG_CATS, BIG_CATS),  # not a seed photo: the two big cats, in either order
    ],
)
def test_the_embedding_puts_a_photo_nearest_to_what_shows_the_same(model, seed_embeddings, name, first, second):
    """What the gallery's similar photos rest on. A query cut from a seed photo finds its source first;
    the nearest of the others tells what the embedding sees: a dog's is the other dog, a cat's no dog."""
    (analysis,) = model.analyse([pixels(model, name)])
    ranked = sorted(seed_embeddings, key=lambda photo: -float(seed_embeddings[photo] @ analysis.embedding))
    assert ranked[0] in first and ranked[1] in second, ranked[:4]


def test_one_pass_gives_the_packages_own_logits_and_a_unit_embedding(model):
    batch = model.preprocess([pixels(model, "dog")])
    features, imagenet_logits, breed_logits = model.forward(batch)
    backbone = model.network.backbone
    with torch.inference_mode():
        reference = backbone((batch.permute(0, 3, 1, 2).float() - 127.0) / 128.0)  # the package's own forward
    torch.testing.assert_close(imagenet_logits, reference, rtol=1e-4, atol=1e-4)
    # The packaged breed head is ImageNet's dog rows: p(breed | dog) is ImageNet's, renormalised.
    torch.testing.assert_close(breed_logits, reference[:, 151:269], rtol=1e-4, atol=1e-4)
    (analysis,) = model.postprocess(features, imagenet_logits, breed_logits)
    assert analysis.embedding.shape == (1280,)
    assert float(np.linalg.norm(analysis.embedding)) == pytest.approx(1.0, abs=1e-5)
    assert analysis.labels == dog_breeds() and analysis.embedder == "efficientnet-lite0"


def test_normalisation_is_inside_the_network_as_in_training(model):
    grey = np.full((224, 224, 3), 127, dtype=np.uint8)
    with torch.inference_mode():
        normalised = model.network.backbone._conv_stem  # the first layer sees (x - 127) / 128
        seen = []
        hook = normalised.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
        model.forward(model.preprocess([grey]))
        hook.remove()
    assert torch.count_nonzero(seen[0]) == 0
    assert model.input_spec.resize_short == 256 and model.input_spec.crop == 224


def test_a_batch_gives_the_same_answers_as_single_images(model):
    photos = [pixels(model, name) for name in ("dog", "cat", "eagle")]
    batched = model.analyse(photos)
    for single_input, batched_result in zip(photos, batched):
        (single,) = model.analyse([single_input])
        np.testing.assert_allclose(single.breed_probabilities, batched_result.breed_probabilities, atol=1e-4)
        np.testing.assert_allclose(single.embedding, batched_result.embedding, atol=1e-4)


def test_dog_embeddings_are_closer_to_each_other_than_to_other_animals(model):
    dog, dog2, cat, eagle = (
        a.embedding for a in model.analyse([pixels(model, n) for n in ("dog", "dog2", "cat", "eagle")])
    )
    assert dog @ dog2 > max(dog @ cat, dog @ eagle)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny-clip")
    words = sorted({w for name in imagenet_classes() for w in ("a photo of a " + name + ".").split()})
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<s>", "</s>", *words])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    ).save_pretrained(path)
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 32,
            "pad_token_id": 0,
            "bos_token_id": 2,
            "eos_token_id": 3,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=12,
    )
    CLIPModel(config).save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def test_clip_backend_embeds_and_scores_imagenet_classes_zero_shot(tiny_clip):
    clip = ClipVision.load(tiny_clip)
    assert clip.model_name == f"clip/{tiny_clip.name}"
    assert (clip.input_spec.resize_short, clip.input_spec.crop, clip.embedding_dim) == (32, 32, 12)
    assert clip.class_embeddings.shape == (1000, 12)
    photo = to_model_input(decode_image(PHOTOS["dog"].read_bytes(), Limits()), clip.input_spec)
    (analysis,) = clip.analyse([photo])
    assert analysis.embedding.shape == (12,)
    assert float(np.linalg.norm(analysis.embedding)) == pytest.approx(1.0, abs=1e-5)
    assert analysis.breed_probabilities.sum() == pytest.approx(1.0, abs=1e-4)
    assert 0.0 < analysis.dog_score < 1.0
    assert analysis.best_guess in imagenet_classes()


def test_clip_answers_without_a_heat_map_and_says_why(tiny_clip):
    """CLIP is a vision transformer: no convolutional features to map. Its answer says so instead of failing."""
    clip = ClipVision.load(tiny_clip)
    photo = to_model_input(decode_image(PHOTOS["dog"].read_bytes(), Limits()), clip.input_spec)
    analysis, explanation = clip.explain(photo)
    (expected,) = clip.analyse([photo])
    np.testing.assert_allclose(analysis.breed_probabilities, expected.breed_probabilities, atol=1e-6)
    assert explanation.heat is None and explanation.breed is None
    assert "no convolutional features" in explanation.unavailable and clip.model_name in explanation.unavailable
