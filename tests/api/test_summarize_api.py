"""The Serve app over real HTTP: the tutorial's route, the typed API, errors, readiness, docs."""

import httpx
import pytest

from backend.models.text import split_sentences
from ui.examples import APOLLO_11

pytestmark = pytest.mark.serve


@pytest.fixture(scope="module")
def client(serve_app):
    with httpx.Client(base_url=serve_app, timeout=120) as client:
        yield client


def test_tutorial_client_call_prints_a_summary(serve_app):
    # Exactly what the Ray Serve tutorial's client does (requests -> httpx, same semantics).
    text = httpx.get(f"{serve_app}/Summarizer", params={"txt": APOLLO_11}, timeout=120).text
    sentences = [s for s in split_sentences(APOLLO_11) if s in text]
    assert len(sentences) == 3
    assert text == " ".join(sentences)


def test_json_api_returns_summary_model_and_timings(client):
    response = client.post("/api/v1/summarize", json={"text": APOLLO_11, "options": {"max_sentences": 2}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "extractive/all-MiniLM-L6-v2"
    assert body["pieces"] == 2
    assert sum(s in body["summary"] for s in split_sentences(APOLLO_11)) == 2
    assert 0 < body["timings"]["model_ms"] <= body["timings"]["total_ms"]


def test_the_summary_names_the_sentences_it_picked_for_each_length(client):
    """`sentences` lists the article's sentences the summary is made of, and the length option changes it."""
    article_sentences = split_sentences(APOLLO_11)
    answers = {}
    for count in (1, 2, 4):
        body = client.post("/api/v1/summarize", json={"text": APOLLO_11, "options": {"max_sentences": count}}).json()
        assert len(body["sentences"]) == count and set(body["sentences"]) <= set(article_sentences), body
        assert body["summary"] == " ".join(body["sentences"])
        answers[count] = body["summary"]
    assert len(set(answers.values())) == 3


def test_an_article_url_is_fetched_reduced_to_its_text_and_summarized(client, image_server):
    """A news page (menu, sidebar, footer around the article) from the test's loopback server, which is on
    the app's allowlist: the summary is made of the article's sentences, none of the page's furniture."""
    body = client.post("/api/v1/summarize", json={"url": f"{image_server.url}/news/apollo-11.html"}).json()
    assert len(body["sentences"]) == 3, body
    assert all(sentence in APOLLO_11 or sentence == "Men walk on moon" for sentence in body["sentences"]), body
    for furniture in ("Subscribe", "Copyright", "sourdough"):
        assert furniture not in body["summary"]


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        ({"url": "http://10.1.2.3/news.html"}, 400, "non-public address"),
        ({"url": "file:///etc/passwd"}, 400, "Only http and https"),
        ({"url": "IMAGE_SERVER/photos/dog-on-porch.jpg"}, 422, "not a web page or text (content type image/jpeg)"),
        ({"url": "IMAGE_SERVER/missing.html"}, 422, "HTTP 404"),
        ({"text": "An article.", "url": "https://example.com/a.html"}, 422, "body: send the article as `text` or"),
        ({"options": {}}, 422, "body: send the article as `text` or"),
    ],
)
def test_article_urls_that_cannot_be_used_say_why(client, image_server, payload, status, message):
    payload = {k: v.replace("IMAGE_SERVER", image_server.url) if isinstance(v, str) else v for k, v in payload.items()}
    response = client.post("/api/v1/summarize", json=payload)
    assert response.status_code == status and message in response.json()["detail"], response.text


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        ({"text": ""}, 422, "empty"),
        ({"text": "   \n\t  "}, 422, "empty"),
        ({"text": "\x00\x01binary\x02 data."}, 422, "control"),
        ({"text": "12345 67890 !!!"}, 422, "no words"),
        ({"text": "x. " * 40_000}, 413, "limit is 100,000"),
        ({"text": 42}, 422, "text: Input should be a valid string"),
        (
            {"text": "Fine text.", "options": {"max_sentences": 0}},
            422,
            "options.max_sentences: Input should be greater",
        ),
        ({"text": "Fine text.", "surprise": True}, 422, "surprise: Extra inputs are not permitted"),
        ({}, 422, "send the article as `text` or its address as `url`"),
    ],
)
def test_bad_input_gets_a_clear_4xx(client, payload, status, message):
    response = client.post("/api/v1/summarize", json=payload)
    assert response.status_code == status
    assert message in response.json()["detail"]


def test_bad_input_on_the_tutorial_route(client):
    missing = client.get("/Summarizer")
    assert missing.status_code == 422
    assert missing.json()["detail"] == "txt: Field required"
    response = client.get("/Summarizer", params={"txt": " "})
    assert response.status_code == 422
    assert "empty" in response.json()["detail"]


def test_malformed_json_is_refused(client):
    response = client.post(
        "/api/v1/summarize", content=b'{"text": "unterminated', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"].startswith("body: not valid JSON at character")


def test_service_still_answers_after_bad_input(client):
    client.post("/api/v1/summarize", json={"text": "\x00"})
    assert client.post("/api/v1/summarize", json={"text": APOLLO_11}).status_code == 200


def test_readiness_reports_the_model_deployment(client):
    response = client.get("/api/v1/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["ready"] is True
    assert body["deployments"]["Summarizer"] == {"ready": True, "model": "extractive/all-MiniLM-L6-v2", "detail": None}
    assert body["deployments"]["Vision"]["model"] == "dog-breeds/1"
    assert body["deployments"]["Vision"]["detail"].startswith("from models:/dog-breeds/1, loaded in ")


def test_openapi_docs_describe_the_routes(client):
    spec = client.get("/openapi.json").json()
    assert {
        "/Summarizer",
        "/api/v1/summarize",
        "/api/v1/ready",
        "/predict/",
        "/api/v1/photos",
        "/api/v1/gallery",
    } <= set(spec["paths"])
    assert "SummarizeRequest" in spec["components"]["schemas"]
    assert client.get("/docs").status_code == 200


def test_root_leads_a_browser_to_the_ui(client):
    response = client.get("/", follow_redirects=False)
    assert response.status_code in (302, 307)
    assert response.headers["location"] == "/ui/"
