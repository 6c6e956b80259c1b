"""Metrics, as an operator reads them: a real Prometheus (Debian's server, tests/prometheus_server.py)
scrapes the session's app through Ray's service-discovery file. The module sends known traffic once
(photos, summaries, refused URLs, a flood of summaries refused at the door or the full queue); each app metric must then
have samples with the right labels and counts equal to what was sent, and every PromQL expression of the
Grafana dashboard (docs/operations/grafana-dashboard.json) must answer numbers, so it cannot rot."""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import pytest

from tests.conftest import PHOTOS, ROOT
from tests.prometheus_server import PrometheusServer

pytestmark = pytest.mark.serve

DASHBOARD = ROOT / "docs" / "operations" / "grafana-dashboard.json"
ARTICLE = (ROOT / "bench" / "article_600_words.txt").read_text(encoding="utf-8")
FLOOD = 100  # summaries at once: well past what the door admits and the Summarizer's 4 running + 32 queued
SENT_PHOTOS = ["dog", "dog2", "dog", "cat", "eagle"]
REFUSED_URLS = {"private_address": "http://10.1.2.3/dog.jpg", "scheme": "ftp://example.org/dog.jpg"}

# What each expectation sums: a query over every replica's series.
QUERIES = {
    "dogs": 'sum(ray_retriever_photos_total{verdict="dog"})',
    "not_dogs": 'sum(ray_retriever_photos_total{verdict="not_dog"})',
    "searches": 'sum(ray_retriever_model_seconds_count{deployment="Gallery",call="search"})',
    "summaries": 'sum(ray_retriever_model_seconds_count{deployment="Summarizer",call="summarize"})',
    # One photo at a time: a forward pass (a batch) each.
    "forward_passes": 'sum(ray_retriever_model_seconds_count{deployment="Vision",call="forward"})',
    "batches": 'sum(ray_serve_batches_processed_total{deployment="Vision"})',
    # A flood is refused at the proxy's door (deadline) or by the Summarizer's full queue, whichever is first.
    "refused": 'sum(ray_retriever_rejections_total{deployment="Summarizer",reason=~"deadline|queue_full"})',
    "photos_200": 'sum(ray_serve_num_http_requests_total{route="/api/v1/photos",status_code="200"})',
    "predict_400": 'sum(ray_serve_num_http_requests_total{route="/predict/",status_code="400"})',
    **{f"refused_{reason}": f'sum(ray_retriever_urls_refused_total{{reason="{reason}"}})' for reason in REFUSED_URLS},
}


@dataclass
class Traffic:
    before: dict[str, float]
    sent: dict[str, float]
    breeds: Counter = field(default_factory=Counter)  # top breed of each photo judged a dog
    breeds_before: dict[str, float] = field(default_factory=dict)
    ready: dict = field(default_factory=dict)


def breed_counts(prometheus: PrometheusServer) -> dict[str, float]:
    result = prometheus.query("sum by (breed) (ray_retriever_top_breeds_total)")
    return {sample["metric"]["breed"]: float(sample["value"][1]) for sample in result}


async def flood(url: str) -> list[int]:
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=FLOOD)) as client:
        summaries = (client.post("/api/v1/summarize", json={"text": ARTICLE}) for _ in range(FLOOD))
        answers = await asyncio.gather(*summaries)
    return [answer.status_code for answer in answers]


@pytest.fixture(scope="module")
def traffic(serve_app: str, prometheus: PrometheusServer) -> Traffic:
    """The module's traffic, sent once, with each counter's value before it and what it should add."""
    before = {name: prometheus.value(query) for name, query in QUERIES.items()}
    seen = Traffic(before, dict.fromkeys(QUERIES, 0.0), breeds_before=breed_counts(prometheus))
    with httpx.Client(base_url=serve_app, timeout=120) as client:
        for name in SENT_PHOTOS:
            answer = client.post("/api/v1/photos", files={"file": ("p.jpg", PHOTOS[name].read_bytes(), "image/jpeg")})
            assert answer.status_code == 200, answer.text
            body = answer.json()
            seen.sent["dogs" if body["is_dog"] else "not_dogs"] += 1
            if body["is_dog"]:
                seen.breeds[max(body["probabilities"], key=body["probabilities"].get)] += 1
        sent = len(SENT_PHOTOS)
        seen.sent.update(searches=sent, forward_passes=sent, batches=sent, photos_200=sent)
        for reason, url in REFUSED_URLS.items():
            assert client.post("/predict/", json={"url": url}).status_code == 400
            seen.sent[f"refused_{reason}"] += 1
            seen.sent["predict_400"] += 1
        assert client.post("/api/v1/summarize", json={"text": ARTICLE}).status_code == 200
        with ThreadPoolExecutor(1) as pool:  # its own event loop: Playwright's may run in this thread
            statuses = Counter(pool.submit(asyncio.run, flood(serve_app)).result())
        assert set(statuses) == {200, 503}, statuses
        seen.sent.update(summaries=1 + statuses[200], refused=statuses[503])
        seen.ready = client.get("/api/v1/ready").json()
    assert seen.sent["dogs"] >= 2 and seen.sent["not_dogs"] >= 1, seen.sent  # the photos are what they seem
    return seen


def test_each_app_metric_counts_what_was_sent(traffic: Traffic, prometheus: PrometheusServer):
    counted = {
        name: prometheus.wait_for(query, traffic.before[name] + traffic.sent[name]) - traffic.before[name]
        for name, query in QUERIES.items()
    }
    assert counted == traffic.sent

    breeds_after = breed_counts(prometheus)
    added = {breed: breeds_after.get(breed, 0) - traffic.breeds_before.get(breed, 0) for breed in breeds_after}
    assert {breed: n for breed, n in added.items() if n} == dict(traffic.breeds)


def test_gauges_name_the_model_and_the_gallery(traffic: Traffic, prometheus: PrometheusServer):
    deployments = traffic.ready["deployments"]
    serving = {
        sample["metric"]["deployment"]: sample["metric"]["model"]
        for sample in prometheus.query("max by (deployment, model) (ray_retriever_model_info) == 1")
    }
    assert serving == {"Vision": deployments["Vision"]["model"], "Summarizer": deployments["Summarizer"]["model"]}
    photos, embedder = re.fullmatch(r"(\d+) photos \((.+)\)", deployments["Gallery"]["model"]).groups()
    [gallery] = prometheus.query("max by (embedder) (ray_retriever_gallery_photos)")
    assert gallery["metric"]["embedder"] == embedder and float(gallery["value"][1]) == int(photos)
    assert prometheus.value("max(ray_retriever_share_link_up)") == 0  # the session's app shares no link
    assert traffic.ready["metrics_url"].endswith("/metrics")  # the readiness route says where they are
    assert httpx.get(traffic.ready["metrics_url"], timeout=10).text.count("ray_retriever_model_info") >= 2


def dashboard_queries() -> list[tuple[str, str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(panel["title"], target["expr"]) for panel in panels for target in panel["targets"]]


@pytest.mark.parametrize(("panel", "expr"), dashboard_queries(), ids=[title for title, _ in dashboard_queries()])
def test_every_dashboard_query_answers_numbers(traffic: Traffic, prometheus: PrometheusServer, panel: str, expr: str):
    # Grafana's own variables, as a dashboard over the last half hour sets them.
    promql = expr.replace("$__rate_interval", "5m").replace("$__range", "30m")
    result = prometheus.query(promql)
    assert result, f"{panel}: no data for {promql}"
    values = [float(sample["value"][1]) for sample in result]
    assert any(not math.isnan(value) for value in values), f"{panel}: only NaN for {promql}"
