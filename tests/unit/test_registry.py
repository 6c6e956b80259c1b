"""The MLflow registry of breed models: the packaged model registered once, loaded back as the same network,
and references resolved the way serve_config.yaml names them. Each test runs on the embedded default (a
temp SQLite store) and on a tracking server as a cluster has one (PostgreSQL behind it, artifacts
uploaded and downloaded through the server over HTTP)."""

import numpy as np
import pytest
import torch

from backend.models.registry import CHAMPION, DEFAULT_MODEL, MODEL_NAME, ModelCard, Registry, RegistryError
from backend.models.vision import BreedClassifier, BreedNetwork, classification_head, load_backbone
from shared.config import Limits
from shared.images import decode_image, to_model_input
from tests.conftest import PHOTOS
from tests.mlflow_server import MlflowServer
from tests.postgres_server import PostgresServer


@pytest.fixture(scope="module", params=["sqlite", "tracking-server"])
def registry(request, tmp_path_factory) -> Registry:
    torch.set_num_threads(2)
    if request.param == "sqlite":
        registry = Registry(f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlflow.db'}")
    else:
        postgres = PostgresServer().start()
        request.addfinalizer(postgres.close)
        server = MlflowServer(postgres.new_database("mlflow")).start()
        request.addfinalizer(server.close)
        registry = Registry(server.url)
    assert registry.ensure_packaged() == (1, True)
    return registry


def test_the_packaged_model_is_registered_once_with_the_champion_alias(registry):
    assert registry.ensure_packaged() == (1, False)  # a second start changes nothing
    assert registry.resolve(DEFAULT_MODEL).uri == f"models:/{MODEL_NAME}/1"
    version = registry.client.get_model_version(MODEL_NAME, "1")
    assert version.aliases == [CHAMPION]
    card = registry.card(f"models:/{MODEL_NAME}/1")
    assert len(card.labels) == 118 and card.head == "imagenet-dogs" and (card.resize_short, card.crop) == (256, 224)
    if registry.artifact_root():  # a local store: artifacts beside the database, not in the current directory
        assert list((registry.artifact_root() / MODEL_NAME).rglob("model.pt2"))
    else:  # a server: proxied artifacts, addressed through it
        assert registry.client.get_run(version.run_id).info.artifact_uri.startswith("mlflow-artifacts:")


def test_the_registered_model_answers_as_the_packaged_one(registry):
    served = registry.load(registry.resolve(DEFAULT_MODEL))
    packaged = BreedClassifier.packaged()
    photos = [
        to_model_input(decode_image(PHOTOS[name].read_bytes(), Limits()), served.input_spec) for name in ("dog", "cat")
    ]
    for loaded, reference in zip(served.analyse(photos), packaged.analyse(photos)):
        np.testing.assert_allclose(loaded.breed_probabilities, reference.breed_probabilities, atol=1e-5)
        np.testing.assert_allclose(loaded.embedding, reference.embedding, atol=1e-5)
        assert loaded.dog_score == pytest.approx(reference.dog_score, abs=1e-5)
        assert (loaded.best_guess, loaded.labels) == (reference.best_guess, reference.labels)
        assert (loaded.model, loaded.embedder) == (f"{MODEL_NAME}/1", "efficientnet-lite0")


def test_a_new_version_keeps_its_labels_and_the_alias_stays_until_moved(registry):
    torch.manual_seed(0)
    network = BreedNetwork(load_backbone(), classification_head(3)).eval()
    card = ModelCard(labels=["a", "b", "c"], backbone_sha256="test", head="mlp")
    with registry._mlflow.start_run(experiment_id=registry.experiment_id("unit")):
        info = registry.log_model(network, card, registered_name=MODEL_NAME)
    assert int(info.registered_model_version) == 2
    assert registry.ensure_packaged() == (1, False)
    assert registry.resolve(DEFAULT_MODEL).name == f"{MODEL_NAME}/1"  # not moved by registering
    registry.set_alias(MODEL_NAME, CHAMPION, 2)
    assert registry.ensure_packaged() == (1, False)
    assert registry.resolve(DEFAULT_MODEL).name == f"{MODEL_NAME}/2"  # a promotion survives restarts
    loaded = registry.load(registry.resolve(DEFAULT_MODEL))
    pixels = to_model_input(decode_image(PHOTOS["dog"].read_bytes(), Limits()), loaded.input_spec)
    (analysis,) = loaded.analyse([pixels])
    assert analysis.labels == ("a", "b", "c") and analysis.breed_probabilities.shape == (3,)
    with torch.inference_mode():
        expected = network(torch.from_numpy(np.stack([pixels])))[2]
    np.testing.assert_allclose(analysis.breed_probabilities, torch.softmax(expected, 1)[0].numpy(), atol=1e-5)
    registry.set_alias(MODEL_NAME, CHAMPION, 1)


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        (f"models:/{MODEL_NAME}@nobody", "nobody"),
        (f"models:/{MODEL_NAME}/99", "99"),
        ("models:/no-such-model@champion", "no-such-model"),
        ("best-run:no-such-experiment", "no finished run"),
        ("dog-breeds", "is not a model reference"),
    ],
)
def test_references_that_name_nothing_fail_clearly(registry, reference, message):
    with pytest.raises(RegistryError, match=message):
        registry.resolve(reference)


def test_registered_versions_map_where_their_eager_networks_look(registry):
    """Grad-CAM through the exported graph the registry holds equals Grad-CAM on the eager network, for
    the packaged head (linear) and a trained one (with batch norm, registered under a name of its own)."""
    torch.manual_seed(1)
    trained = BreedNetwork(load_backbone(), classification_head(3)).eval()
    card = ModelCard(labels=["a", "b", "c"], backbone_sha256="test", head="mlp")
    with registry._mlflow.start_run(experiment_id=registry.experiment_id("unit")):
        info = registry.log_model(trained, card, registered_name="explained-unit")
    pairs = [
        (registry.load(registry.resolve(f"models:/{MODEL_NAME}/1")), BreedClassifier.packaged()),
        (
            registry.load(registry.resolve(f"models:/explained-unit/{info.registered_model_version}")),
            BreedClassifier(trained, ("a", "b", "c")),
        ),
    ]
    pixels = to_model_input(decode_image(PHOTOS["dog2"].read_bytes(), Limits()), pairs[0][0].input_spec)
    for served, eager in pairs:
        assert not isinstance(served.network, BreedNetwork)  # the exported graph
        for breed in (None, served.labels[-1]):
            _, explained = served.explain(pixels, breed)
            _, expected = eager.explain(pixels, breed)
            assert explained.breed == expected.breed == (breed or explained.breed)
            assert explained.heat.max() == pytest.approx(1.0)
            np.testing.assert_allclose(explained.heat, expected.heat, atol=1e-4)
