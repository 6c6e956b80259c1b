"""The gallery on PostgreSQL (the cluster setting, `gallery.database_url`) behind two Gallery replicas:
an add through one is found through every one within the refresh interval; and with the database
restarted under the running app, adds meanwhile get a clear 503, searches keep answering from the photos
in memory, readiness says what is wrong, and once the database is back the app reconnects by itself with
every photo it had acknowledged."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backend.local import load_serve_config
from bench.app import App
from tests.conftest import PHOTOS, ROOT, guarded_config
from tests.faults import own_app
from tests.image_server import ImageServer
from tests.postgres_server import PostgresServer

pytestmark = pytest.mark.faults

GALLERY_REPLICAS = 2
SEARCHES = 12  # in a row, each routed to either replica: all must find the new photo


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, image_server: ImageServer, postgres: PostgresServer) -> Iterator[App]:
    workdir = tmp_path_factory.mktemp("postgres-app")
    config = guarded_config(load_serve_config(ROOT / "serve_config.yaml"), image_server.port)
    api = next(a for a in config["applications"] if a["name"] == "api")
    api["args"]["gallery"] = {**api["args"]["gallery"], "database_url": postgres.url}
    gallery = next(d for d in api["deployments"] if d["name"] == "Gallery")
    gallery["num_replicas"] = GALLERY_REPLICAS
    with own_app(config, workdir) as running:
        yield running


def add(client: httpx.Client, label: str) -> httpx.Response:
    return client.post("/api/v1/gallery", files={"file": ("p.jpg", PHOTOS["dog2"].read_bytes(), "image/jpeg")}, data={"label": label})


def test_an_add_through_one_replica_is_found_through_every_one(app: App, pytestconfig: pytest.Config):
    assert len(app.replica_pids("Gallery")) == GALLERY_REPLICAS
    with httpx.Client(base_url=app.url, timeout=60) as client:
        added = add(client, "seen by every replica")
        assert added.status_code == 201
        acknowledged = time.monotonic()
        photo_id = added.json()["id"]

        def found() -> bool:
            matches = client.post("/api/v1/photos", files={"file": ("dog.jpg", PHOTOS["dog2"].read_bytes(), "image/jpeg")}, data={"n": "3"})
            return photo_id in [m["id"] for m in matches.json()["top_matches"]]

        deadline = acknowledged + 60
        while not all(found() for _ in range(SEARCHES)):
            assert time.monotonic() < deadline, "a replica never saw the add"
            time.sleep(0.2)
        visible_within_s = time.monotonic() - acknowledged  # to the end of the searches that all found it
    path = Path(pytestconfig.getoption("--output")) / "gallery-postgres.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"gallery_replicas": GALLERY_REPLICAS, "add_found_by_every_replica_within_s": round(visible_within_s, 2)}) + "\n")


def test_the_gallery_rides_out_a_database_restart(app: App, postgres: PostgresServer):
    photo = {"file": ("dog.jpg", PHOTOS["dog"].read_bytes(), "image/jpeg")}
    with httpx.Client(base_url=app.url, timeout=60) as client:
        before = add(client, "before the restart")
        assert before.status_code == 201, before.text
        assert client.post("/api/v1/photos", files=photo).json()["top_matches"]  # the seed photos are in PostgreSQL

        postgres.stop()
        refused = add(client, "while the database is down")
        assert refused.status_code == 503
        assert refused.json() == {"detail": "The gallery's database is not answering; try again shortly."}
        assert refused.headers["retry-after"]
        search = client.post("/api/v1/photos", files=photo)
        assert search.status_code == 200 and search.json()["top_matches"]  # from the photos in memory
        ready = client.get("/api/v1/ready")
        assert ready.status_code == 503
        assert ready.json()["deployments"]["Gallery"]["detail"] == "The gallery's database is not answering; try again shortly."

        postgres.start()
        after = add(client, "after the restart")  # the pool's dropped connections are replaced
        assert after.status_code == 201, after.text
        assert after.json()["id"] > before.json()["id"]
        assert client.get(f"/api/v1/gallery/{before.json()['id']}/image").status_code == 200
        assert client.get("/api/v1/ready").status_code == 200
