"""Managing the gallery over HTTP on the running app: list, metadata, relabel, delete, and adds that can be
sent again safely (Idempotency-Key). Every photo a test adds it deletes again, so that the session's
gallery is what the other tests expect."""

import io
import time
import uuid

import httpx
import pytest
from PIL import Image

from tests.conftest import PHOTOS

pytestmark = pytest.mark.serve


@pytest.fixture(scope="module")
def client(serve_app):
    with httpx.Client(base_url=serve_app, timeout=120) as client:
        yield client


def mirrored(name: str) -> bytes:
    """A photo the gallery does not hold: a fixture mirrored, so a search finds it by its embedding."""
    out = io.BytesIO()
    Image.open(PHOTOS[name]).convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(out, "JPEG")
    return out.getvalue()


def add(client, data: bytes, label: str | None = None, key: str | None = None) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    form = {"label": label} if label is not None else {}
    return client.post(
        "/api/v1/gallery", files={"file": ("big-cat.jpg", data, "image/jpeg")}, data=form, headers=headers
    )


def found_by_search(client, photo_id: int) -> dict | None:
    """The photo as the cheetah crop's search (every photo: n=50) shows it, or None."""
    data = PHOTOS["cheetah"].read_bytes()
    body = client.post("/api/v1/photos", files={"file": ("q.jpg", data, "image/jpeg")}, data={"n": 50}).json()
    return next((match for match in body["top_matches"] if match["id"] == photo_id), None)


def eventually(check, timeout_s: float = 10.0):
    """Within the gallery's refresh interval (1 s), with room for a slow machine."""
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        assert time.monotonic() < deadline, "not seen in time"
        time.sleep(0.25)
    return result


def total(client, **params) -> int:
    return client.get("/api/v1/gallery", params={"limit": 1, **params}).json()["total"]


def test_relabel_and_delete_show_in_the_list_and_in_searches(client):
    label = f"cheetah-{uuid.uuid4().hex[:6]}"
    before = total(client)
    added = add(client, mirrored("cheetah2"), label)
    assert added.status_code == 201, added.text
    photo = added.json()
    try:
        listed = client.get("/api/v1/gallery", params={"label": label}).json()
        assert listed["total"] == 1 and [p["id"] for p in listed["photos"]] == [photo["id"]]
        newest = client.get("/api/v1/gallery", params={"limit": 2}).json()
        assert newest["total"] == before + 1 and newest["photos"][0]["id"] == photo["id"]  # newest first
        assert len(newest["photos"]) == 2 and newest["photos"][1]["id"] < photo["id"]
        assert client.get("/api/v1/gallery", params={"offset": before + 5}).json()["photos"] == []
        metadata = client.get(f"/api/v1/gallery/{photo['id']}").json()
        assert (metadata["label"], metadata["label_source"], metadata["source"]) == (
            label,
            "user",
            "upload:big-cat.jpg",
        )
        assert metadata["added_by"] is None  # the open API: no key to record
        assert eventually(lambda: found_by_search(client, photo["id"]))["class"] == label

        relabelled = client.patch(f"/api/v1/gallery/{photo['id']}", json={"label": "  big cat  "})
        assert relabelled.status_code == 200 and relabelled.json()["label"] == "big cat"
        eventually(lambda: (found_by_search(client, photo["id"]) or {}).get("class") == "big cat")
        for bad, problem in [("big\x00cat", "U+0000"), ("two\nlines", "U+000A"), ("c" * 101, "at most 100")]:
            refused = client.patch(f"/api/v1/gallery/{photo['id']}", json={"label": bad})
            assert refused.status_code == 422 and problem in refused.json()["detail"]
        assert client.get(f"/api/v1/gallery/{photo['id']}").json()["label"] == "big cat"
    finally:
        deleted = client.delete(f"/api/v1/gallery/{photo['id']}")
    assert deleted.status_code == 204
    assert client.get(f"/api/v1/gallery/{photo['id']}").status_code == 404
    assert client.get(f"/api/v1/gallery/{photo['id']}/image").status_code == 404
    again = client.delete(f"/api/v1/gallery/{photo['id']}")
    assert again.status_code == 404 and f"No photo {photo['id']}" in again.json()["detail"]
    eventually(lambda: found_by_search(client, photo["id"]) is None)
    assert total(client) == before


def test_a_label_with_a_control_character_stores_nothing(client):
    before = total(client)
    refused = add(client, mirrored("horse"), "pony\x00")
    assert refused.status_code == 422 and "U+0000" in refused.json()["detail"]
    assert total(client) == before


def test_an_add_sent_again_with_its_idempotency_key_is_stored_once(client):
    key, before = str(uuid.uuid4()), total(client)
    data = mirrored("cheetah")
    first = add(client, data, "spotted", key)
    assert first.status_code == 201, first.text
    try:
        again = add(client, data, "spotted", key)
        assert again.status_code == 200 and again.json() == first.json()
        assert total(client) == before + 1
        reused = add(client, data, "other label", key)
        assert reused.status_code == 409 and "Idempotency-Key" in reused.json()["detail"]
        assert add(client, data, "spotted", "not a valid key").status_code == 422  # printable ASCII, no spaces
        assert total(client) == before + 1
    finally:
        client.delete(f"/api/v1/gallery/{first.json()['id']}")
