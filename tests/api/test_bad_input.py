"""More of the bad-input corpus over HTTP (issue 7); URL cases stand beside the route's own in
test_photos_api.py, text cases also in test_summarize_api.py. Here: odd but valid images are read as the
photo they show, broken bodies and texts get a readable 4xx, and the service answers normally afterwards."""

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import PHOTOS

pytestmark = pytest.mark.serve


@pytest.fixture(scope="module")
def client(serve_app):
    with httpx.Client(base_url=serve_app, timeout=120) as client:
        yield client


def encoded(image: Image.Image, format: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=format, **options)
    return out.getvalue()


def predict(client, data: bytes) -> httpx.Response:
    return client.post("/api/v1/photos", files={"file": ("photo.jpg", data, "image/jpeg")})


@pytest.fixture(scope="module")
def upright(client):
    """The dog photo's answer as a plain JPEG: what the odd encodings of it must agree with."""
    return predict(client, PHOTOS["dog"].read_bytes()).json()


def dog() -> Image.Image:
    return Image.open(PHOTOS["dog"]).convert("RGB")


def exif_rotated() -> bytes:
    """Stored on its side with EXIF orientation 6 ("turn 90 degrees clockwise to show"), as phones do."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encoded(dog().rotate(90, expand=True), "JPEG", quality=95, exif=exif.tobytes())


def animated_gif() -> bytes:
    """The dog as the first frame, then a black frame: the first frame is the photo."""
    frames = [dog().convert("P", palette=Image.Palette.ADAPTIVE), Image.new("P", dog().size)]
    return encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def png_16_bit() -> bytes:
    """16 bits of grey per pixel, as scanners and medical images save them."""
    grey = np.asarray(dog().convert("L"), dtype=np.uint16) * 257  # 0..255 -> 0..65535
    return encoded(Image.fromarray(grey), "PNG")


@pytest.mark.parametrize(
    ("make", "same_breed"),
    [
        (exif_rotated, True),
        (lambda: encoded(dog().convert("CMYK"), "JPEG", quality=95), True),
        (animated_gif, True),
        (lambda: encoded(dog(), "WEBP", quality=90), True),
        (png_16_bit, False),  # grey: the colours that tell the breeds apart are gone, the dog is not
    ],
    ids=["exif-rotated", "cmyk-jpeg", "animated-gif", "webp", "16-bit-png"],
)
def test_odd_but_valid_images_are_read_as_the_photo_they_show(client, upright, make, same_breed):
    response = predict(client, make())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["is_dog"] is True
    if same_breed:
        assert next(iter(body["probabilities"])) == next(iter(upright["probabilities"]))
        assert body["dog_score"] == pytest.approx(upright["dog_score"], abs=0.1)


@pytest.mark.parametrize(
    ("request_kwargs", "message"),
    [
        ({"json": {"url": 5, "k": 4}}, "url: Input should be a valid string"),
        ({"json": {"url": "http://x/y.jpg", "k": "four"}}, "k: Input should be a valid integer"),
        ({"json": ["http://x/y.jpg", 4]}, "Input should be a valid dictionary"),
        (
            {"content": b'{"url": "http://x/y.jpg", "k": 4', "headers": {"content-type": "application/json"}},
            "not valid JSON",
        ),
        ({"content": b"", "headers": {"content-type": "application/json"}}, "Field required"),
    ],
)
def test_broken_predict_bodies_get_a_readable_422(client, request_kwargs, message):
    response = client.post("/predict/", **request_kwargs)
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]


@pytest.mark.parametrize(
    ("request_kwargs", "status", "message"),
    [
        (
            {
                "content": '{"text": "caf\xe9 au lait. It is good."}'.encode("latin-1"),
                "headers": {"content-type": "application/json"},
            },
            400,
            "body: not UTF-8 text (byte 13 cannot be decoded)",
        ),
        ({"json": {"text": "Words. " * 750_000}}, 413, "the limit is 100,000"),  # ~5 MB
        ({"json": {"text": "Replacement \ufffd characters. From a bad decode."}}, 422, "undecodable"),
    ],
    ids=["invalid-utf8", "5-mb", "replacement-chars"],
)
def test_broken_texts_get_a_clear_4xx(client, request_kwargs, status, message):
    response = client.post("/api/v1/summarize", **request_kwargs)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]


def test_uploads_without_a_file_or_with_wrong_fields_are_refused(client):
    missing = client.post("/api/v1/photos", data={"k": "4"})
    assert missing.status_code == 422 and "file: Field required" in missing.json()["detail"]
    wrong_k = client.post(
        "/api/v1/photos", files={"file": ("d.jpg", PHOTOS["dog"].read_bytes(), "image/jpeg")}, data={"k": "many"}
    )
    assert wrong_k.status_code == 422 and "k: Input should be a valid integer" in wrong_k.json()["detail"]


def test_the_service_answers_normally_after_the_corpus(client, upright):
    ready = client.get("/api/v1/ready").json()
    assert ready["ready"] is True
    assert predict(client, PHOTOS["dog"].read_bytes()).json()["probabilities"] == upright["probabilities"]
