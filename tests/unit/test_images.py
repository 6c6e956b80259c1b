"""Safe image input: decoding every kind of file a user sends, and fetching URLs without SSRF."""

import asyncio
import io
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from shared.config import Limits
from shared.errors import BlockedUrl, ImageTooLarge, InvalidImage, UnreachableUrl
from shared.images import (
    InputSpec,
    check_address,
    decode_image,
    fetch_image_bytes,
    to_model_input,
)
from tests.conftest import PHOTOS, SEED_PHOTOS
from tests.image_server import ImageServer

LIMITS = Limits()


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def test_real_jpeg_decodes_to_rgb():
    image = decode_image(PHOTOS["dog"].read_bytes(), LIMITS)
    assert image.mode == "RGB" and image.size == (195, 330)


def test_exif_orientation_is_applied():
    tall = Image.new("RGB", (40, 80), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: shown 90 degrees clockwise
    decoded = decode_image(encode(tall, "JPEG", exif=exif), LIMITS)
    assert decoded.size == (80, 40)


@pytest.mark.parametrize(
    ("image", "fmt"),
    [
        (Image.new("RGBA", (8, 8), (255, 0, 0, 0)), "PNG"),
        (Image.new("L", (8, 8), 128), "PNG"),
        (Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"),
        (Image.new("P", (8, 8), 3), "GIF"),
    ],
)
def test_every_mode_becomes_rgb(image, fmt):
    assert decode_image(encode(image, fmt), LIMITS).mode == "RGB"


def test_transparent_pixels_become_white_not_black():
    decoded = decode_image(encode(Image.new("RGBA", (4, 4), (0, 0, 0, 0)), "PNG"), LIMITS)
    assert decoded.getpixel((0, 0)) == (255, 255, 255)


def test_16_bit_png_is_scaled_not_clipped():
    values = np.full((4, 4), 32768, dtype=np.uint16)  # mid-grey in 16 bits
    decoded = decode_image(encode(Image.fromarray(values), "PNG"), LIMITS)
    assert decoded.getpixel((0, 0)) == (127, 127, 127)


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (8, 8), colour) for colour in ("red", "blue")]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    r, g, b = decode_image(data, LIMITS).getpixel((0, 0))
    assert r > 200 and b < 50


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"", InvalidImage, "empty"),
        (b"GIF89a but not really" * 3, InvalidImage, "not an image"),
        (b"%PDF-1.4 hello", InvalidImage, "not an image"),
        (PHOTOS["dog"].read_bytes()[:5000], InvalidImage, "truncated or corrupt"),
    ],
)
def test_unusable_files_get_clear_errors(data, error, message):
    with pytest.raises(error, match=message):
        decode_image(data, LIMITS)


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that claims huge dimensions: a decompression bomb's header."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("width", "height", "message"),
    [
        (10_000, 5_000, "10000x5000 pixels; the limit is 40 megapixels"),
        (50_000, 50_000, "limit of 40 megapixels"),
    ],
)
def test_decompression_bomb_is_refused_from_its_header(width, height, message):
    data = png_header_only(width, height)
    assert len(data) < 200
    with pytest.raises(ImageTooLarge, match=message):
        decode_image(data, LIMITS)


def test_file_over_the_byte_cap_is_refused():
    with pytest.raises(ImageTooLarge, match="limit is 1 MiB"):
        decode_image(b"\xff" * (2**20 + 1), Limits(max_image_bytes=2**20))


def test_model_input_is_a_centre_crop_of_the_resized_short_side():
    image = Image.new("RGB", (400, 200), "black")
    image.paste((255, 255, 255), (150, 0, 250, 200))  # a white band in the middle
    pixels = to_model_input(image, InputSpec(resize_short=100, crop=80))
    assert pixels.shape == (80, 80, 3) and pixels.dtype == np.uint8
    assert pixels[40, 40].tolist() == [255, 255, 255]
    assert pixels[40, 0].tolist() == [0, 0, 0]


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "::1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "0.0.0.0",
        "::ffff:127.0.0.1",
        "fd00::1",
        "224.0.0.1",
        "100.64.0.1",
    ],
)
def test_non_public_addresses_are_blocked(address):
    with pytest.raises(BlockedUrl):
        check_address(address, 80, LIMITS)


def test_public_and_allowlisted_addresses_pass():
    check_address("93.184.216.34", 80, LIMITS)  # only checked, never connected to
    allow = Limits(url_allowlist=("127.0.0.1:8123", "10.0.0.0/8"))
    check_address("127.0.0.1", 8123, allow)
    check_address("10.9.8.7", 443, allow)
    with pytest.raises(BlockedUrl):
        check_address("127.0.0.1", 8124, allow)  # the allowlist names a port


@pytest.fixture(scope="module")
def server():
    with ImageServer() as server:
        yield server


def fetch(url: str, **limits) -> bytes:
    # On a thread of its own: Playwright's sync API may have left a loop running on this one.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, fetch_image_bytes(url, Limits(**limits))).result()


def allow(server: ImageServer, **limits) -> dict:
    return {"url_allowlist": (f"127.0.0.1:{server.port}",), **limits}


def test_fetches_an_allowlisted_photo_and_follows_a_safe_redirect(server):
    assert fetch(f"{server.url}/photos/dog-on-porch.jpg", **allow(server)) == SEED_PHOTOS["dog"].read_bytes()
    assert fetch(f"{server.url}/redirect-to-photo", **allow(server)) == SEED_PHOTOS["dog"].read_bytes()


@pytest.mark.parametrize(
    ("url", "error", "message"),
    [
        ("file:///etc/passwd", BlockedUrl, "Only http and https"),
        ("ftp://127.0.0.1/x.jpg", BlockedUrl, "Only http and https"),
        ("gopher://127.0.0.1:70/", BlockedUrl, "Only http and https"),
        ("http://169.254.169.254/latest/meta-data/", BlockedUrl, "non-public"),
        ("http://10.0.0.1/dog.jpg", BlockedUrl, "non-public"),
        ("http://[::1]/dog.jpg", BlockedUrl, "non-public"),
        ("http:///nohost", BlockedUrl, "no host"),
    ],
)
def test_blocked_urls_are_refused_before_connecting(url, error, message):
    with pytest.raises(error, match=message):
        fetch(url)


def test_loopback_is_blocked_unless_allowlisted(server):
    with pytest.raises(BlockedUrl, match="non-public"):
        fetch(f"{server.url}/photos/dog-on-porch.jpg")
    with pytest.raises(BlockedUrl, match="non-public"):
        fetch(f"http://localhost:{server.port}/photos/dog-on-porch.jpg")  # a name resolving to loopback


@pytest.mark.parametrize(
    ("path", "error", "message", "limits"),
    [
        ("/redirect-to-metadata", BlockedUrl, "non-public", {}),
        ("/redirect-loop", BlockedUrl, "redirects more than 3 times", {}),
        ("/not-an-image", InvalidImage, "content type text/html", {}),
        ("/missing.jpg", UnreachableUrl, "HTTP 404", {}),
        ("/slow", UnreachableUrl, "did not answer within 1 s", {"url_timeout_s": 1}),
        ("/endless", ImageTooLarge, "over the limit", {"max_image_bytes": 2**20}),
    ],
)
def test_misbehaving_servers_get_clear_errors(server, path, error, message, limits):
    with pytest.raises(error, match=message):
        fetch(server.url + path, **allow(server, **limits))
