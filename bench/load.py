"""The load generator: a process of its own that sends one kind of request (or the `mixed` kinds) to a
running app, `concurrency` at a time, until `requests` have been answered or `max_seconds` have passed,
and prints what it saw as JSON (latencies, statuses, throughput; with --log, every request as a JSON line).

    python -m bench.load --url http://127.0.0.1:8000 --scenario api-photo --concurrency 16 --requests 200

It refuses any URL that is not on loopback: a benchmark never sends traffic off the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import json
import resource
import ssl
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import typer

from bench.stats import latency_summary

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "backend" / "gallery_seed" / "dog-on-porch.jpg"
ARTICLE_600 = ROOT / "bench" / "article_600_words.txt"  # B4's ~600-word article


@dataclass
class Target:
    url: str  # the app, e.g. http://127.0.0.1:8000
    photo: bytes
    article: str
    image_url: str | None  # a photo on a loopback server, for the URL routes
    matches: int


# A scenario makes one request and returns (HTTP status, ms to the first streamed piece or None), or
# (status, first piece, what kind of request it was, its Retry-After header) for scenarios of several kinds.
Request = Callable[[], Awaitable[tuple]]
SCENARIOS: dict[str, Callable[[Target, httpx.AsyncClient], Request]] = {}


def scenario(name: str):
    def register(build):
        SCENARIOS[name] = build
        return build

    return register


@scenario("api-photo")
def api_photo(target: Target, client: httpx.AsyncClient) -> Request:
    """The typed API with an uploaded photo: breeds + similar photos."""

    async def request():
        files = {"file": ("dog.jpg", target.photo, "image/jpeg")}
        response = await client.post("/api/v1/photos", files=files, data={"k": "4", "n": str(target.matches)})
        return response.status_code, None

    return request


@scenario("api-photo-explained")
def api_photo_explained(target: Target, client: httpx.AsyncClient) -> Request:
    """The same, with where the model looked (`explain=true`: Grad-CAM and the PNG overlay)."""

    async def request():
        files = {"file": ("dog.jpg", target.photo, "image/jpeg")}
        form = {"k": "4", "n": str(target.matches), "explain": "true"}
        response = await client.post("/api/v1/photos", files=files, data=form)
        return response.status_code, None

    return request


BATCH = 16  # photos in one batch request


@scenario("api-photo-batch")
def api_photo_batch(target: Target, client: httpx.AsyncClient) -> Request:
    """BATCH photos in one request (`POST /api/v1/photos/batch`): breeds and dog scores, no gallery search."""

    async def request():
        files = [("file", (f"dog{i}.jpg", target.photo, "image/jpeg")) for i in range(BATCH)]
        response = await client.post("/api/v1/photos/batch", files=files)
        if response.status_code != 200:
            return response.status_code, None
        failed = [r["status"] for r in response.json()["results"] if r["status"] != 200]
        return (f"a photo {failed[0]}" if failed else 200), None  # only a whole answer counts

    return request


@scenario("api-predict-url")
def api_predict_url(target: Target, client: httpx.AsyncClient) -> Request:
    """The tutorial's route: `POST /predict/ {"url", "k"}` (the app fetches the photo)."""

    async def request():
        response = await client.post("/predict/", json={"url": target.image_url, "k": 4})
        return response.status_code, None

    return request


@scenario("api-summary")
def api_summary(target: Target, client: httpx.AsyncClient) -> Request:
    async def request():
        response = await client.post("/api/v1/summarize", json={"text": target.article})
        return response.status_code, None

    return request


# The mixed scenario's cycle: of every ten requests, four photos, four summaries, two gallery adds.
MIXED_CYCLE = ("photo", "summary", "photo", "add", "summary", "photo", "summary", "photo", "add", "summary")
MIXED_TURNS = itertools.count()  # one cycle across all workers, each request taking the next kind
SHORT_ARTICLE_PARAGRAPHS = 1  # summaries of a short article: the load is many requests, not long ones


@scenario("mixed")
def mixed(target: Target, client: httpx.AsyncClient) -> Request:
    """The API's work mixed as users make it: photos (breeds + similar photos), summaries and gallery
    adds, in MIXED_CYCLE order; each answer is logged with its kind."""
    article = "\n\n".join(target.article.split("\n\n")[:SHORT_ARTICLE_PARAGRAPHS])

    async def request():
        kind = MIXED_CYCLE[next(MIXED_TURNS) % len(MIXED_CYCLE)]
        if kind == "photo":
            files = {"file": ("dog.jpg", target.photo, "image/jpeg")}
            response = await client.post("/api/v1/photos", files=files, data={"k": "4", "n": str(target.matches)})
        elif kind == "summary":
            response = await client.post("/api/v1/summarize", json={"text": article})
        else:
            files = {"file": ("load.jpg", target.photo, "image/jpeg")}
            response = await client.post("/api/v1/gallery", files=files, data={"label": "load test"})
        return response.status_code, None, kind, response.headers.get("retry-after")

    return request


class GradioProtocol:
    """Gradio's HTTP protocol as the browser speaks it, over the load generator's keep-alive client: upload;
    join the queue, then read the event's messages (server-sent events) to its completion.
    (gradio_client opens fresh connections and threads per call: its own cost, not the server's.)"""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.fn_ids: dict[str, int] = {}

    async def upload(self, name: str, data: bytes) -> dict | None:
        response = await self.client.post("/ui/gradio_api/upload", files={"files": (name, data, "image/jpeg")})
        if response.status_code != 200:
            return None
        return {"path": response.json()[0], "orig_name": name, "meta": {"_type": "gradio.FileData"}}

    async def join(self, api_name: str, data: list) -> tuple[httpx.Response, str]:
        """Put an event in Gradio's queue: (the answer to joining, the session to read its messages with)."""
        if not self.fn_ids:
            config = (await self.client.get("/ui/config")).json()
            self.fn_ids = {d["api_name"]: d["id"] for d in config["dependencies"] if d.get("api_name")}
        session = uuid.uuid4().hex
        joined = await self.client.post(
            "/ui/gradio_api/queue/join",
            json={
                "data": data,
                "fn_index": self.fn_ids[api_name],
                "session_hash": session,
                "event_data": None,
                "trigger_id": None,
            },
        )
        return joined, session

    async def call(self, api_name: str, data: list) -> tuple[int, float | None]:
        """(200 when the event completed successfully, ms to its first streamed output or None)."""
        started = time.perf_counter()
        joined, session = await self.join(api_name, data)
        if joined.status_code != 200:
            return joined.status_code, None
        first = None
        async with self.client.stream("GET", "/ui/gradio_api/queue/data", params={"session_hash": session}) as events:
            async for line in events.aiter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("msg") == "process_generating" and first is None:
                    first = (time.perf_counter() - started) * 1000
                if message.get("msg") == "process_completed":
                    return (200 if message.get("success") else 500), first
        return 502, first  # the stream ended without a completion


@scenario("ui-rest-photo")
def ui_rest_photo(target: Target, client: httpx.AsyncClient) -> Request:
    """Gradio's REST path (no queue), as a program calls it: upload the photo, then run `/find`."""

    gradio = GradioProtocol(client)

    async def request():
        photo = await gradio.upload("dog.jpg", target.photo)
        if photo is None:
            return 500, None
        response = await client.post("/ui/gradio_api/run/find", json={"data": [photo, "", target.matches, False]})
        return response.status_code, None

    return request


@scenario("ui-queue-photo")
def ui_queue_photo(target: Target, client: httpx.AsyncClient) -> Request:
    """Gradio's queue, as the browser uses it: upload, join, results over SSE."""
    queue = GradioProtocol(client)

    async def request():
        photo = await queue.upload("dog.jpg", target.photo)
        if photo is None:
            return 500, None
        return await queue.call("find", [photo, "", target.matches, False])

    return request


@scenario("ui-queue-summary")
def ui_queue_summary(target: Target, client: httpx.AsyncClient) -> Request:
    """A summary streamed through Gradio's queue: time to the first piece, and to the end."""
    queue = GradioProtocol(client)

    async def request():
        return await queue.call("summarize", [target.article, 3])

    return request


def require_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise typer.BadParameter(f"{url}: benchmarks only send traffic to loopback (127.0.0.1, ::1, localhost)")


async def run_load(
    build: Callable,
    target: Target,
    concurrency: int,
    requests: int,
    max_seconds: float,
    warmup: int,
    timeout_s: float = 120,
    log: Path | None = None,
) -> dict:
    """`timeout_s`: a request with no answer by then is counted as hung (its status is the timeout's name).
    `log`: every request as a JSON line (start and end in s since the load began, kind, status, Retry-After)."""
    lines = log.open("w") if log else None
    tls = ssl.create_default_context()  # one for all clients: each would load the CA bundle (34 ms)
    async with contextlib.AsyncExitStack() as clients:
        # A client per worker, as each browser has its own cookies: a UI session stays on its replica.
        requests_by_worker = [
            build(
                target,
                await clients.enter_async_context(
                    httpx.AsyncClient(base_url=target.url, timeout=timeout_s, verify=tls)
                ),
            )
            for _ in range(concurrency)
        ]
        for _ in range(warmup):  # first calls pay for connections, caches, lazy imports
            await requests_by_worker[0]()
        latencies: list[float] = []
        refusals: list[float] = []  # ms to each "try again" (503, 429)
        first_pieces: list[float] = []
        statuses: Counter[str] = Counter()
        by_kind: dict[str, Counter[str]] = {}
        sent = 0
        started_at = time.time()  # wall clock, to line the log up with what happened to the app meanwhile
        started = time.perf_counter()
        deadline = started + max_seconds

        async def worker(request: Request) -> None:
            nonlocal sent
            while sent < requests and time.perf_counter() < deadline:
                sent += 1
                began = time.perf_counter()
                kind = retry_after = None
                try:
                    status, first, *more = await request()
                    if more:
                        kind, retry_after = more
                except httpx.HTTPError as exc:
                    status, first = type(exc).__name__, None
                except Exception as exc:  # a client library's error (gradio_client): counted, not fatal
                    status, first = type(exc).__name__, None
                statuses[str(status)] += 1
                if kind:
                    by_kind.setdefault(kind, Counter())[str(status)] += 1
                if lines:
                    record = {"start": began - started, "end": time.perf_counter() - started, "kind": kind}
                    lines.write(json.dumps({**record, "status": str(status), "retry_after": retry_after}) + "\n")
                if isinstance(status, int) and 200 <= status < 300:
                    latencies.append((time.perf_counter() - began) * 1000)
                    if first is not None:
                        first_pieces.append(first)
                elif status in (429, 503):
                    refusals.append((time.perf_counter() - began) * 1000)

        try:
            await asyncio.gather(*(worker(request) for request in requests_by_worker))
        finally:
            if lines:
                lines.close()
        elapsed = time.perf_counter() - started
    result = {
        "concurrency": concurrency,
        "sent": sent,
        "ok": len(latencies),  # 2xx answers
        "statuses": dict(statuses),
        **({"by_kind": {kind: dict(counts) for kind, counts in by_kind.items()}} if by_kind else {}),
        "started_at": started_at,
        "elapsed_s": round(elapsed, 3),
        "throughput_rps": round(len(latencies) / elapsed, 2) if elapsed else 0.0,
        "latency_ms": latency_summary(latencies),
        "refusal_ms": latency_summary(refusals),
        # This process at its largest: the load generator must stay small beside the app it measures.
        "load_generator_peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    if first_pieces:
        result["first_piece_ms"] = latency_summary(first_pieces)
    return result


def main(
    url: str = typer.Option(..., help="The app, e.g. http://127.0.0.1:8000."),
    scenario_name: str = typer.Option(..., "--scenario", help=f"One of: {', '.join(SCENARIOS)}."),
    concurrency: int = typer.Option(1, min=1, max=256),
    requests: int = typer.Option(50, min=1, max=100_000, help="Stop after this many requests..."),
    max_seconds: float = typer.Option(120, min=1, help="...or after this long, whichever comes first."),
    warmup: int = typer.Option(3, min=0, help="Requests sent first and not counted."),
    image_url: str | None = typer.Option(None, help="A photo on a loopback server (URL scenarios)."),
    matches: int = typer.Option(5, min=1, help="Similar photos asked for."),
    timeout_s: float = typer.Option(120, min=1, help="A request not answered by then counts as hung."),
    log: Path | None = typer.Option(None, help="Write every request as a JSON line to this file."),
) -> None:
    require_loopback(url)
    if image_url:
        require_loopback(image_url)
    if scenario_name not in SCENARIOS:
        raise typer.BadParameter(f"unknown scenario {scenario_name!r}; one of {', '.join(SCENARIOS)}")
    target = Target(url.rstrip("/"), PHOTO.read_bytes(), ARTICLE_600.read_text(encoding="utf-8"), image_url, matches)
    result = asyncio.run(
        run_load(SCENARIOS[scenario_name], target, concurrency, requests, max_seconds, warmup, timeout_s, log)
    )
    print(json.dumps({"scenario": scenario_name, **result}))


if __name__ == "__main__":
    typer.run(main)
