"""P8's crowd: `clients` clients, each with a connection of its own, send one request each at the same
moment (every other one a dog photo, the others a summary of the ~600-word article) and wait for the
answer. Prints JSON: statuses by kind, the accepted answers' latency, the refusals' (503/429), what
was answered per second, and this process's own peak memory and CPU.

    python -m bench.crowd --url http://127.0.0.1:8000 --clients 2000

aiohttp rather than the load generator's httpx: on 2 cores the clients share the CPU with the app, and
httpx spends several times aiohttp's CPU per request, which would be timed as the app's. Loopback only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import resource
import time
from collections import Counter
from dataclasses import dataclass

import aiohttp
import typer

from bench.load import ARTICLE_600, PHOTO, require_loopback
from bench.stats import latency_summary


@dataclass(frozen=True)
class Answer:
    kind: str  # "photo" or "summary"
    status: str  # the HTTP status, or what went wrong ("hung", "ClientConnectorError")
    seconds: float
    body: bytes = b""
    retry_after: str | None = None
    sent_s: float | None = None  # from the start to the request's headers on the wire (this process's own delay)


async def send_crowd(
    url: str, clients: int, timeout_s: float = 120, photo: bytes | None = None, article: str | None = None
) -> tuple[list[Answer], float]:
    """Every client's one request sent at the same moment; their answers, and the seconds until the last.
    The photo and article: the benchmarks' unless given."""
    photo = photo or PHOTO.read_bytes()
    article = article or ARTICLE_600.read_text(encoding="utf-8")
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    # When each request reached the wire: on 2 cores this process's own CPU delays the last of 2,000.
    tracing = aiohttp.TraceConfig()

    async def headers_sent(_session, context, _params) -> None:
        context.trace_request_ctx["sent"] = time.perf_counter()

    tracing.on_request_headers_sent.append(headers_sent)
    sessions = [
        aiohttp.ClientSession(url, timeout=timeout, connector=aiohttp.TCPConnector(limit=1), trace_configs=[tracing])
        for _ in range(clients)
    ]
    start = asyncio.Event()
    answers: list[Answer] = []

    async def one(session: aiohttp.ClientSession, turn: int) -> None:
        kind = "photo" if turn % 2 == 0 else "summary"
        await start.wait()
        began = time.perf_counter()
        sending: dict[str, float] = {}
        try:
            if kind == "photo":
                form = aiohttp.FormData()
                form.add_field("file", photo, filename="dog.jpg", content_type="image/jpeg")
                form.add_field("k", "4")
                request = session.post("/api/v1/photos", data=form, trace_request_ctx=sending)
            else:
                request = session.post("/api/v1/summarize", json={"text": article}, trace_request_ctx=sending)
            async with request as response:
                body = await response.read()
                answer = Answer(kind, str(response.status), 0.0, body, response.headers.get("Retry-After"))
        except TimeoutError:
            answer = Answer(kind, "hung", 0.0)
        except aiohttp.ClientError as exc:
            answer = Answer(kind, type(exc).__name__, 0.0)
        sent = sending["sent"] - began if "sent" in sending else None
        answers.append(dataclasses.replace(answer, seconds=time.perf_counter() - began, sent_s=sent))

    try:
        tasks = [asyncio.create_task(one(session, turn)) for turn, session in enumerate(sessions)]
        await asyncio.sleep(0.1)  # every task waits at the start line
        started = time.perf_counter()
        start.set()
        await asyncio.gather(*tasks)
        return answers, time.perf_counter() - started
    finally:
        await asyncio.gather(*(session.close() for session in sessions))


def summarize_crowd(answers: list[Answer], elapsed: float) -> dict:
    by_kind: dict[str, Counter] = {}
    for answer in answers:
        by_kind.setdefault(answer.kind, Counter())[answer.status] += 1
    accepted = [a.seconds * 1000 for a in answers if a.status.startswith("2")]
    refused = [a.seconds * 1000 for a in answers if a.status in ("503", "429")]
    return {
        "clients": len(answers),
        "statuses": dict(Counter(a.status for a in answers)),
        "by_kind": {kind: dict(counts) for kind, counts in by_kind.items()},
        "elapsed_s": round(elapsed, 2),
        "answered_per_s": round(len(accepted) / elapsed, 2),
        "accepted_ms": latency_summary(accepted),
        "refusal_ms": latency_summary(refused),
        # The refusals from the moment each was on the wire: the app's part, without this process's delay.
        "refusal_after_sent_ms": latency_summary(
            [(a.seconds - a.sent_s) * 1000 for a in answers if a.status in ("503", "429") and a.sent_s is not None]
        ),
        "sent_after_start_ms": latency_summary([a.sent_s * 1000 for a in answers if a.sent_s is not None]),
    }


def main(
    url: str = typer.Option(..., help="The app, e.g. http://127.0.0.1:8000."),
    clients: int = typer.Option(2000, min=1, max=10_000),
    timeout_s: float = typer.Option(120, min=1, help="A request not answered by then counts as hung."),
) -> None:
    require_loopback(url)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < clients + 64:  # a socket per client, and some spare
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, clients + 64), hard))
    cpu_started = time.process_time()
    answers, elapsed = asyncio.run(send_crowd(url.rstrip("/"), clients, timeout_s))
    result = {
        **summarize_crowd(answers, elapsed),
        "load_generator_cpu_s": round(time.process_time() - cpu_started, 2),
        "load_generator_peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    typer.run(main)
