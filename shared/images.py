"""Safe image input: decode once with Pillow, reduce to model input, fetch URLs without SSRF.

Used at the ingress of both faces (API and UI): an image is decoded, size-checked and reduced to the
model's input here, once, and only the small model input travels to the Vision deployment.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import socket
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from shared.config import Limits
from shared.errors import BlockedUrl, ImageTooLarge, InvalidImage, UnreachableUrl

T = TypeVar("T")

# --------------------------------------------------------------------------- decoding


def decode_image(data: bytes, limits: Limits) -> Image.Image:
    """Decode an encoded image into an upright RGB image, or raise InvalidImage/ImageTooLarge."""
    if not data:
        raise InvalidImage("The file is empty.")
    if len(data) > limits.max_image_bytes:
        raise ImageTooLarge(
            f"The image is {len(data) / 2**20:.1f} MiB; the limit is {limits.max_image_bytes / 2**20:.0f} MiB."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own cap applies below
            image = Image.open(io.BytesIO(data))
            # Dimensions come from the header: refuse a bomb before decoding a single pixel.
            if image.width * image.height > limits.max_image_pixels:
                raise ImageTooLarge(
                    f"The image is {image.width}x{image.height} pixels; the limit is "
                    f"{limits.max_image_pixels / 1e6:.0f} megapixels."
                )
            image.seek(0)  # animated images: the first frame
            image.load()
            image = ImageOps.exif_transpose(image)
    except InvalidImage:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own, far higher cap, hit at open
        raise ImageTooLarge(
            f"The image has more pixels than the limit of {limits.max_image_pixels / 1e6:.0f} megapixels."
        ) from exc
    except UnidentifiedImageError as exc:
        raise InvalidImage("The file is not an image this service can read (JPEG, PNG, GIF, WebP, BMP, TIFF).") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImage(f"The image is truncated or corrupt ({exc}).") from exc
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB for every mode: transparency over white, 16-bit and float scaled (not clipped), CMYK converted."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(values.max()), 1.0)
        image = Image.fromarray(np.clip(values / top * 255.0, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


@dataclass(frozen=True)
class InputSpec:
    """The geometry of a vision model's input: resize the short side, then centre-crop a square."""

    resize_short: int
    crop: int


@dataclass(frozen=True)
class Embedder:
    """What the deployed vision model is: its name (the embedding space), dimension, and input."""

    name: str
    dim: int
    input_spec: InputSpec


def to_model_input(image: Image.Image, spec: InputSpec) -> np.ndarray:
    """Reduce an RGB image to the model's input pixels: uint8 (crop, crop, 3), bicubic like training."""
    scale = spec.resize_short / min(image.size)
    size = (max(spec.crop, round(image.width * scale)), max(spec.crop, round(image.height * scale)))
    resized = image.resize(size, Image.Resampling.BICUBIC)
    left, top = (size[0] - spec.crop) // 2, (size[1] - spec.crop) // 2
    return np.asarray(resized.crop((left, top, left + spec.crop, top + spec.crop)), dtype=np.uint8)


def thumbnail_jpeg(image: Image.Image, max_side: int = 320, quality: int = 85) -> bytes:
    """A small JPEG for the gallery: what browsers load, not what the model sees."""
    thumb = image.copy()
    thumb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    thumb.save(out, format="JPEG", quality=quality, optimize=True)
    return out.getvalue()


# --------------------------------------------------------------------------- heat maps

# Cold to hot: blue, yellow, red; drawn over the photo, more opaque where hotter.
HEAT_COLOURS = ("#1f3cff", "#ffd400", "#ff1f00")


def heat_at(heat: np.ndarray, width: int, height: int) -> np.ndarray:
    """A coarse heat map (h, w) resampled bilinearly to height x width, as float32."""
    image = Image.fromarray(np.ascontiguousarray(heat, dtype=np.float32), mode="F")
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def heat_overlay(pixels: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """The model input (uint8 RGB) with a 0..1 heat map over it, in HEAT_COLOURS: uint8 RGB."""
    fine = np.clip(heat_at(heat, pixels.shape[1], pixels.shape[0]), 0.0, 1.0)
    levels = Image.fromarray((fine * 255).round().astype(np.uint8), mode="L")
    cold, warm, hot = HEAT_COLOURS
    colours = np.asarray(ImageOps.colorize(levels, black=cold, white=hot, mid=warm), dtype=np.float32)
    opacity = (0.15 + 0.5 * fine)[..., None]
    return (pixels * (1 - opacity) + colours * opacity).round().astype(np.uint8)


def png_bytes(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


# --------------------------------------------------------------------------- URLs


def _allowlisted(ip: ipaddress._BaseAddress, port: int, limits: Limits) -> bool:
    for entry in limits.url_allowlist:
        if "/" in entry:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
            continue
        host, _, entry_port = entry.rpartition(":")
        try:
            if ipaddress.ip_address(host.strip("[]")) == ip and int(entry_port) == port:
                return True
        except ValueError:
            continue
    return False


def check_address(ip_text: str, port: int, limits: Limits) -> None:
    """Refuse loopback, private, link-local (cloud metadata), multicast and reserved addresses."""
    ip = ipaddress.ip_address(ip_text.split("%")[0])
    if getattr(ip, "ipv4_mapped", None):
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if ip.is_global and not ip.is_multicast:
        return
    if _allowlisted(ip, port, limits):
        return
    raise BlockedUrl(f"The URL points to a non-public address ({ip}); it is not fetched.", "private_address")


async def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UnreachableUrl(f"The URL's host {host!r} does not resolve.", "unresolvable") from exc
    return list(dict.fromkeys(info[4][0] for info in infos))


async def fetch_image_bytes(url: str, limits: Limits) -> bytes:
    """GET an image over http(s) with every safeguard (`fetch_url`), an image content type and the
    image size cap."""
    return await fetch_url(url, limits, "image/*", lambda response: _read_image_body(response, limits))


async def fetch_url(url: str, limits: Limits, accept: str, read_body: Callable[[httpx.Response], Awaitable[T]]) -> T:
    """GET a URL over http(s) with every safeguard: scheme, public addresses only (checked after DNS
    resolution and again on every redirect, and the checked address is the one connected to), timeouts;
    `read_body` checks the answer's status and type and reads it under its own size cap."""
    timeout = httpx.Timeout(limits.url_timeout_s)
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        for _ in range(limits.url_max_redirects + 1):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https"):
                raise BlockedUrl(f"Only http and https URLs are fetched, not {parts.scheme or 'this'}: URLs.", "scheme")
            if not parts.hostname:
                raise BlockedUrl("The URL has no host.", "no_host")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            addresses = await _resolve(parts.hostname, port)
            for address in addresses:  # every answer must pass, not just the first
                check_address(address, port, limits)
            pinned = addresses[0]
            netloc = f"[{pinned}]:{port}" if ":" in pinned else f"{pinned}:{port}"
            request = client.build_request(
                "GET",
                urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")),
                headers={"Host": parts.netloc.rpartition("@")[2], "Accept": accept},
                extensions={"sni_hostname": parts.hostname} if parts.scheme == "https" else {},
            )
            try:
                async with asyncio.timeout(limits.url_timeout_s):
                    response = await client.send(request, stream=True)
                    try:
                        if response.is_redirect:
                            url = urljoin(url, response.headers.get("location", ""))
                            continue
                        return await read_body(response)
                    finally:
                        await response.aclose()
            except TimeoutError as exc:
                raise UnreachableUrl(f"The URL did not answer within {limits.url_timeout_s:.0f} s.", "timeout") from exc
            except httpx.HTTPError as exc:
                message = f"The URL could not be fetched ({type(exc).__name__})."
                raise UnreachableUrl(message, "connection_failed") from exc
    raise BlockedUrl(f"The URL redirects more than {limits.url_max_redirects} times.", "redirects")


async def _read_image_body(response: httpx.Response, limits: Limits) -> bytes:
    if response.status_code != 200:
        raise UnreachableUrl(f"The URL answered HTTP {response.status_code}.", "http_error")
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if not content_type.startswith("image/"):
        raise InvalidImage(f"The URL is not an image (content type {content_type or 'missing'}).")
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limits.max_image_bytes:
        raise ImageTooLarge(
            f"The image is {int(declared) / 2**20:.1f} MiB; the limit is {limits.max_image_bytes / 2**20:.0f} MiB."
        )
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limits.max_image_bytes:
            raise ImageTooLarge(f"The image is over the limit of {limits.max_image_bytes / 2**20:.0f} MiB.")
    return bytes(body)
