"""Dog photos through the running Serve app over HTTP: the tutorial's /predict/ contract, uploads,
the gallery, and bad input. URLs that are really fetched point at the test's loopback image server,
which is on the app's allowlist; every other address must be refused before any connection."""

import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image

from backend.models.index import labelled_images
from backend.models.registry import MODEL_NAME, Registry
from backend.models.vision import BreedClassifier, dog_breeds
from shared.config import Limits
from shared.images import decode_image, to_model_input
from tests.conftest import PHOTOS, SEED
from tests.unit.test_images import png_header_only

pytestmark = pytest.mark.serve
HUSKY_TYPES = {"malamute", "Siberian husky", "Eskimo dog"}


@pytest.fixture(scope="module")
def client(serve_app):
    with httpx.Client(base_url=serve_app, timeout=120) as client:
        yield client


def upload(client, name_or_bytes, route="/api/v1/photos", **form):
    data = PHOTOS[name_or_bytes].read_bytes() if isinstance(name_or_bytes, str) else name_or_bytes
    return client.post(route, files={"file": ("photo.jpg", data, "image/jpeg")}, data=form)


def test_tutorial_predict_contract_through_a_url(client, image_server):
    response = client.post("/predict/", json={"url": f"{image_server.url}/photos/dog-on-porch.jpg", "k": 4})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) >= {"probabilities", "top_matches"}
    assert next(iter(body["probabilities"])) in HUSKY_TYPES
    assert len(body["probabilities"]) == 118
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    assert len(body["top_matches"]) == 5  # the configured default
    for match in body["top_matches"]:
        assert set(match) >= {"class", "path", "similarity"}
        assert match["path"].startswith(str(client.base_url))
    assert body["is_dog"] is True


def test_served_probabilities_equal_an_in_process_forward_pass(client):
    model = BreedClassifier.packaged()  # the wheel's weights, not through the registry
    pixels = to_model_input(decode_image(PHOTOS["dog"].read_bytes(), Limits()), model.input_spec)
    (expected,) = model.analyse([pixels])
    served = upload(client, "dog").json()
    for breed, probability in expected.top_breeds(118):
        assert served["probabilities"][breed] == pytest.approx(probability, abs=1e-4)
    assert served["dog_score"] == pytest.approx(expected.dog_score, abs=1e-4)
    packaged_version, _ = Registry().ensure_packaged()  # whichever version the registry gave it
    assert served["model"] == f"{MODEL_NAME}/{packaged_version}"


@pytest.mark.parametrize("name", ["cat", "giraffe", "eagle"])
def test_other_animals_are_not_dogs(client, name):
    body = upload(client, name).json()
    assert body["is_dog"] is False and body["dog_score"] < 0.1
    assert body["best_guess"]


@pytest.mark.parametrize(("name", "dogs_first"), [("dog", True), ("dog2", True), ("cat", False)])
def test_the_nearest_gallery_photos_are_what_the_embedding_finds(client, name, dogs_first):
    """Query photos are not in the gallery (crops of other photos). n=50 is more photos than the top breeds'
    labels hold, so the search ranks the whole gallery by embedding alone, not by the breed filter: a
    dog's two nearest photos are dogs, a cat's are not."""
    matches = upload(client, name, n=50).json()["top_matches"]
    assert len(matches) >= len(labelled_images(SEED))  # the whole seed at least: no breed filter left
    assert [m["class"] in dog_breeds() for m in matches[:2]] == [dogs_first] * 2, matches[:3]


def test_gallery_add_then_find_then_fetch_its_image(client):
    flipped = Image.open(PHOTOS["dog"]).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    out = io.BytesIO()
    flipped.save(out, format="JPEG", quality=95)
    added = upload(client, out.getvalue(), route="/api/v1/gallery", label="Siberian husky")
    assert added.status_code == 201, added.text
    item = added.json()
    assert (item["label"], item["label_source"]) == ("Siberian husky", "user")

    found = upload(client, out.getvalue()).json()["top_matches"][0]
    assert found["id"] == item["id"] and found["similarity"] == pytest.approx(1.0, abs=1e-3)
    image = client.get(found["path"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(image.content)).size) <= 320  # a thumbnail
    assert client.get("/api/v1/gallery/999999/image").status_code == 404


def test_gallery_add_without_label_predicts_it_for_dogs_only(client):
    dog = upload(client, "dog2", route="/api/v1/gallery").json()
    assert dog["label_source"] == "predicted" and dog["label"] in HUSKY_TYPES
    cat = upload(client, "cat", route="/api/v1/gallery").json()
    assert (cat["label"], cat["label_source"]) == (None, "none")


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"", 422, "empty"),
        (b"<html>not an image</html>", 422, "not an image"),
        (PHOTOS["dog"].read_bytes()[:4000], 422, "truncated or corrupt"),
        (png_header_only(50_000, 50_000), 413, "megapixels"),
        (b"\xff" * (10 * 2**20 + 1), 413, "limit of 10 MiB"),
    ],
)
def test_bad_uploads_get_clear_errors(client, data, status, message):
    response = upload(client, data)
    assert response.status_code == status
    assert message in response.json()["detail"]


@pytest.mark.parametrize(
    ("url", "status", "message"),
    [
        ("file:///etc/passwd", 400, "Only http and https"),
        ("ftp://127.0.0.1/dog.jpg", 400, "Only http and https"),
        ("http://127.0.0.1:1/dog.jpg", 400, "non-public"),
        ("http://localhost:1/dog.jpg", 400, "non-public"),
        ("http://[::1]/dog.jpg", 400, "non-public"),
        ("http://10.0.0.1/dog.jpg", 400, "non-public"),
        ("http://172.16.0.1/dog.jpg", 400, "non-public"),
        ("http://192.168.0.1/dog.jpg", 400, "non-public"),
        ("http://169.254.169.254/latest/meta-data/", 400, "non-public"),
        ("gopher://127.0.0.1:70/1", 400, "Only http and https"),
        ("//169.254.169.254/latest", 400, "Only http and https"),
        ("http:///dog.jpg", 400, "no host"),
        ("http://2130706433/dog.jpg", 400, "non-public"),  # 127.0.0.1 written as one number
        ("http://0.0.0.0/dog.jpg", 400, "non-public"),
        ("http://[::ffff:169.254.169.254]/dog.jpg", 400, "non-public"),  # IPv4-mapped IPv6
        ("http://user:pw@10.1.2.3/dog.jpg", 400, "non-public"),
        ("http://[fd00::1]/dog.jpg", 400, "non-public"),  # IPv6 unique local
        ("http://100.64.0.1/dog.jpg", 400, "non-public"),  # carrier-grade NAT
    ],
)
def test_blocked_urls_are_refused(client, url, status, message):
    response = client.post("/predict/", json={"url": url, "k": 4})
    assert response.status_code == status
    assert message in response.json()["detail"]


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/redirect-to-metadata", 400, "non-public"),
        ("/not-an-image", 422, "content type text/html"),
        ("/lying-image", 422, "not an image"),
        ("/missing.jpg", 422, "HTTP 404"),
        ("/redirect-loop", 400, "redirects more than 3 times"),
        ("/endless", 413, "over the limit of 10 MiB"),
        ("/slow", 422, "did not answer within 10 s"),
    ],
)
def test_misbehaving_image_urls_get_clear_errors(client, image_server, path, status, message):
    response = client.post("/predict/", json={"url": image_server.url + path, "k": 4})
    assert response.status_code == status
    assert message in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"url": "http://x/y.jpg", "k": 0}, "k: Input should be greater than or equal to 1"),
        ({"url": "http://x/y.jpg", "k": 119}, "k: Input should be less than or equal to 118"),
        ({"url": "http://x/y.jpg", "n": 51}, "n: Input should be less than or equal to 50"),
        ({"k": 4}, "url: Field required"),
        ({"url": "http://x/y.jpg", "extra": 1}, "extra: Extra inputs are not permitted"),
    ],
)
def test_predict_request_is_validated(client, body, message):
    response = client.post("/predict/", json=body)
    assert response.status_code == 422
    assert message in response.json()["detail"]


def test_service_is_healthy_after_bad_input(client):
    ready = client.get("/api/v1/ready").json()
    assert ready["ready"] is True
    assert set(ready["deployments"]) == {"Summarizer", "Vision", "Gallery"}
    assert upload(client, "dog").status_code == 200


def test_explain_answers_where_the_model_looked_as_an_in_process_pass_does(client, image_server):
    """`explain` adds the heat map of the top breed (or the one asked about) as numbers and as a PNG over
    the photo's model input; it equals Grad-CAM on the packaged network in this process."""
    model = BreedClassifier.packaged()
    pixels = to_model_input(decode_image(PHOTOS["dog-bicycle"].read_bytes(), Limits()), model.input_spec)
    _, expected = model.explain(pixels)
    _, chihuahua = model.explain(pixels, "Chihuahua")

    plain = upload(client, "dog-bicycle").json()
    assert plain["explanation"] is None  # only when asked
    for body in (
        upload(client, "dog-bicycle", explain="true").json(),
        client.post(
            "/predict/", json={"url": f"{image_server.url}/fixtures/dog-bicycle-crop.jpg", "explain": True}
        ).json(),
    ):
        explanation = body["explanation"]
        assert explanation["breed"] == next(iter(body["probabilities"])) == expected.breed
        assert explanation["probability"] == pytest.approx(body["probabilities"][expected.breed], abs=1e-4)
        np.testing.assert_allclose(explanation["heat"], expected.heat, atol=1e-3)
        assert explanation["image"].startswith("data:image/png;base64,")
        overlay = Image.open(io.BytesIO(base64.b64decode(explanation["image"].split(",", 1)[1])))
        assert (overlay.format, overlay.size) == ("PNG", (224, 224))
        assert body["probabilities"] == pytest.approx(plain["probabilities"], abs=1e-5)  # the same answer

    asked = upload(client, "dog-bicycle", explain_breed="Chihuahua").json()["explanation"]
    assert asked["breed"] == "Chihuahua"
    np.testing.assert_allclose(asked["heat"], chihuahua.heat, atol=1e-3)
    unknown = upload(client, "dog-bicycle", explain_breed="poodle-ish")
    assert unknown.status_code == 422 and "poodle-ish" in unknown.json()["detail"], unknown.text


def test_a_batch_answers_each_photo_in_order_and_a_bad_one_alone(client):
    """Several `file` parts: one result each, in order; a file that is not an image and one over the pixel
    limit get their own error and status, and the others are answered as single calls answer them."""
    parts = [
        ("dog.jpg", PHOTOS["dog-bicycle"].read_bytes(), "image/jpeg"),
        ("notes.txt", b"not an image at all", "text/plain"),
        ("cat.jpg", PHOTOS["cat"].read_bytes(), "image/jpeg"),
        ("bomb.png", png_header_only(50_000, 50_000), "image/png"),
        ("dog2.jpg", PHOTOS["dog2"].read_bytes(), "image/jpeg"),
    ]
    response = client.post("/api/v1/photos/batch", files=[("file", part) for part in parts], data={"top": "2"})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["filename"] for r in results] == [name for name, _, _ in parts]
    assert [r["status"] for r in results] == [200, 422, 200, 413, 200]
    assert "not an image" in results[1]["error"] and "megapixels" in results[3]["error"]
    for result, name in ((results[0], "dog-bicycle"), (results[2], "cat"), (results[4], "dog2")):
        single = upload(client, name).json()
        assert result["error"] is None and result["model"] == single["model"]
        assert (result["is_dog"], result["best_guess"]) == (single["is_dog"], single["best_guess"])
        assert list(result["breeds"]) == list(single["probabilities"])[:2]
        for breed, probability in result["breeds"].items():
            assert probability == pytest.approx(single["probabilities"][breed], abs=1e-4)
    assert results[0]["is_dog"] and not results[2]["is_dog"]


def test_a_batch_over_its_limits_is_refused_whole(client):
    small = ("file", ("dog.jpg", PHOTOS["dog"].read_bytes(), "image/jpeg"))
    too_many = client.post("/api/v1/photos/batch", files=[small] * 33)
    assert too_many.status_code == 413 and "At most 32 photos" in too_many.json()["detail"]
    heavy = ("file", ("big.jpg", b"\xff" * (9 * 2**20), "image/jpeg"))
    too_large = client.post("/api/v1/photos/batch", files=[heavy] * 8)  # 72 MiB
    assert too_large.status_code == 413 and "over the limit of 64 MiB" in too_large.json()["detail"]
    none = client.post("/api/v1/photos/batch", data={"top": "3"})
    assert none.status_code == 422 and "file" in none.json()["detail"]
