"""docs/scale-out.md, followed on one machine: a PostgreSQL server and an MLflow tracking
server of the test's own, a two-node Ray cluster (a head and a worker, each a `ray start` of its own with
its own ports, temp dir, data dir and a custom resource), `retriever prepare`, then `serve deploy` of the
project's serve_config.yaml. Changed only as a user scaling out changes it: two Gallery replicas, one
per node; Vision at most one replica per node, autoscaling within the shipped bounds and target but with
a test's delays (each replica's model comes over HTTP from the tracking server, to a node that has never
seen it); a free HTTP port.

The cluster settings reach every replica the one way docs/scale-out.md gives: the environment the nodes start
with (RETRIEVER_GALLERY_URL, MLFLOW_TRACKING_URI). Each node has a data dir of its own, so a replica that
fell back to a local store would be caught."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from retriever.local import free_port
from tests.conftest import GUARD_ENV, PHOTOS, ROOT
from tests.mlflow_server import MlflowServer
from tests.postgres_server import PostgresServer
from tests.ray_cluster import RayCluster

pytestmark = pytest.mark.cluster

RETRIEVER = str(ROOT / ".venv" / "bin" / "retriever")
SERVE = str(ROOT / ".venv" / "bin" / "serve")
SEARCHES = 12  # in a row, each routed to either Gallery replica: all must find the new photo
DATABASE_DOWN = "The gallery's database is not answering; try again shortly."


class Deployed:
    def __init__(self, cluster: RayCluster, postgres: PostgresServer, url: str, deploy_s: float) -> None:
        self.cluster, self.postgres, self.url = cluster, postgres, url
        self.metrics: dict[str, float] = {"deploy_s": round(deploy_s, 1)}

    def replicas(self) -> dict[str, list[dict]]:
        """Every deployment's replicas (state, node_id, pid, ...), from the Serve REST API."""
        apps = self.cluster.get("/api/serve/applications/").json()["applications"]
        return {name: d["replicas"] for app in apps.values() for name, d in app["deployments"].items()}


def scaled_out_config(http_port: int) -> dict:
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    config["http_options"]["port"] = http_port
    deployments = {d["name"]: d for app in config["applications"] for d in app["deployments"]}
    deployments["Gallery"].pop("autoscaling_config")
    deployments["Gallery"].update(num_replicas=2, max_replicas_per_node=1)
    # The shipped targets and bounds; one replica per node, and the delays and look-back of a test
    # instead of minutes (docs/operations.md: what a cluster sets).
    deployments["Vision"]["max_replicas_per_node"] = 1
    deployments["Vision"]["autoscaling_config"].update(upscale_delay_s=2, downscale_delay_s=6, look_back_period_s=4)
    # One address sends all the load here: no per-caller rate limit (tests/api/test_access.py tests it).
    deployments["Api"]["user_config"]["rate_limit"] = None
    return config


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Iterator[Deployed]:
    with PostgresServer() as postgres, MlflowServer(postgres.new_database("mlflow")) as mlflow:
        settings = {"RETRIEVER_GALLERY_URL": postgres.url, "MLFLOW_TRACKING_URI": mlflow.url}
        with RayCluster({**GUARD_ENV, **settings}) as cluster:
            started = time.monotonic()
            cluster.start_head(num_cpus=2, resources={"head_node": 1})
            cluster.add_worker("worker", num_cpus=2, resources={"worker_node": 1})
            cluster.wait_for_nodes(2)
            nodes_up_s = time.monotonic() - started
            started = time.monotonic()
            prepared = cluster.cli(RETRIEVER, "prepare", "--config", str(ROOT / "serve_config.yaml"), timeout_s=300)
            assert prepared.returncode == 0, prepared.stdout + prepared.stderr
            assert "registered the packaged model as version 1" in prepared.stdout
            prepare_s = time.monotonic() - started

            config_path = tmp_path_factory.mktemp("cluster") / "serve_config.yaml"
            http_port = free_port()
            config_path.write_text(yaml.safe_dump(scaled_out_config(http_port), sort_keys=False))
            started = time.monotonic()
            sent = cluster.cli(SERVE, "deploy", str(config_path), "--address", cluster.dashboard_url)
            assert sent.returncode == 0, sent.stdout + sent.stderr
            url = f"http://127.0.0.1:{http_port}"
            output = Path(pytestconfig.getoption("--output"))
            try:
                wait_until_ok(url, ["/api/v1/ready", "/ui/"], cluster, timeout_s=300)
            except TimeoutError:
                cluster.save_logs(output / "cluster-logs")
                raise
            running = Deployed(cluster, postgres, url, time.monotonic() - started)
            running.metrics.update(nodes_up_s=round(nodes_up_s, 1), prepare_s=round(prepare_s, 1))
            try:
                yield running
            finally:
                path = output / "cluster.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(running.metrics) + "\n")
                if cluster.running:  # a test failed before the last one stopped it
                    cluster.cli(SERVE, "shutdown", "--yes", "--address", cluster.dashboard_url, timeout_s=60)


def wait_until_ok(url: str, paths: list[str], cluster: RayCluster, timeout_s: float) -> None:
    """Until Serve has every replica of every application running, then every path answers 200."""
    deadline = time.monotonic() + timeout_s
    waiting = ["serve", *paths]
    with httpx.Client(base_url=url, timeout=10) as client:
        while waiting:
            try:
                if waiting[0] == "serve":
                    apps = cluster.get("/api/serve/applications/").json()["applications"]
                    done = len(apps) == 2 and all(app["status"] == "RUNNING" for app in apps.values())
                else:
                    done = client.get(waiting[0]).status_code == 200
                if done:
                    waiting.pop(0)
                    continue
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                status = cluster.cli(SERVE, "status", "--address", cluster.dashboard_url)
                raise TimeoutError(f"{waiting[0]} not 200 within {timeout_s:.0f} s:\n{status.stdout}{status.stderr}")
            time.sleep(0.5)


def add(client: httpx.Client, label: str) -> httpx.Response:
    return client.post(
        "/api/v1/gallery", files={"file": ("p.jpg", PHOTOS["dog2"].read_bytes(), "image/jpeg")}, data={"label": label}
    )


def test_replicas_run_on_both_nodes_with_the_settings_from_the_nodes(deployed: Deployed):
    head, worker = deployed.cluster.nodes
    node_ids = {
        ("head" if "head_node" in n["resources_total"] else "worker"): n["node_id"]
        for n in deployed.cluster.alive_nodes()
    }
    replicas = deployed.replicas()
    states = {name: [r["state"] for r in rs] for name, rs in replicas.items()}
    assert states == {name: ["RUNNING"] * len(rs) for name, rs in replicas.items()}
    assert sorted(r["node_id"] for r in replicas["Gallery"]) == sorted(node_ids.values())
    assert len(replicas["Vision"]) == 1  # its min_replicas, with nothing to do
    for node in (head, worker):
        # Every store is the shared one: nothing fell back to a file in a node's own data dir (which holds
        # only the node's own cache of exported models).
        assert {path.name for path in node.data_dir.iterdir()} <= {"model-cache"}, list(node.data_dir.iterdir())
    with httpx.Client(base_url=deployed.url, timeout=60) as client:
        ready = client.get("/api/v1/ready").json()["deployments"]
        assert ready["Vision"]["model"] == "dog-breeds/1"  # registered by `retriever prepare`, from the server
        searches = [
            client.post("/api/v1/photos", files={"file": ("dog.jpg", PHOTOS["dog"].read_bytes(), "image/jpeg")})
            for _ in range(SEARCHES)
        ]
        assert all(s.status_code == 200 and s.json()["is_dog"] for s in searches)
        # Once the app says ready, either Gallery replica answers with the packaged photos (seeded once,
        # by one of them, into PostgreSQL).
        assert all(len(s.json()["top_matches"]) == 5 for s in searches)
        assert client.get("/Summarizer", params={"txt": "One sentence here. Another one there."}).status_code == 200


def test_an_add_through_one_node_is_found_through_the_other(deployed: Deployed):
    with httpx.Client(base_url=deployed.url, timeout=60) as client:
        added = add(client, "seen on both nodes")
        assert added.status_code == 201, added.text
        acknowledged = time.monotonic()
        photo_id = added.json()["id"]

        def found() -> bool:
            matches = client.post(
                "/api/v1/photos",
                files={"file": ("dog.jpg", PHOTOS["dog2"].read_bytes(), "image/jpeg")},
                data={"n": "3"},
            )
            return photo_id in [m["id"] for m in matches.json()["top_matches"]]

        deadline = acknowledged + 60
        while not all(found() for _ in range(SEARCHES)):
            assert time.monotonic() < deadline, "a Gallery replica never saw the add"
            time.sleep(0.2)
        deployed.metrics["add_visible_on_both_nodes_within_s"] = round(time.monotonic() - acknowledged, 2)


def test_a_relabel_and_a_delete_through_one_node_show_through_the_other(deployed: Deployed):
    """Through PostgreSQL's change log: every search, whichever Gallery replica answers it, sees the new
    label, then no longer finds the deleted photo."""
    with httpx.Client(base_url=deployed.url, timeout=60) as client:
        photo_id = add(client, "before relabel").json()["id"]

        def labels_seen() -> list[str | None]:
            """The photo's label in each of SEARCHES searches (n=50: the whole gallery), "" where absent."""
            seen = []
            for _ in range(SEARCHES):
                matches = client.post(
                    "/api/v1/photos",
                    files={"file": ("dog.jpg", PHOTOS["dog2"].read_bytes(), "image/jpeg")},
                    data={"n": "50"},
                ).json()["top_matches"]
                seen.append(next((m["class"] for m in matches if m["id"] == photo_id), ""))
            return seen

        def until(expected: str | None, what: str) -> float:
            started, deadline = time.monotonic(), time.monotonic() + 60
            while labels_seen() != [expected] * SEARCHES:
                assert time.monotonic() < deadline, f"a Gallery replica never saw the {what}"
                time.sleep(0.2)
            return round(time.monotonic() - started, 2)

        until("before relabel", "add")
        assert client.patch(f"/api/v1/gallery/{photo_id}", json={"label": "after relabel"}).status_code == 200
        deployed.metrics["relabel_visible_on_both_nodes_within_s"] = until("after relabel", "relabel")
        assert client.delete(f"/api/v1/gallery/{photo_id}").status_code == 204
        deployed.metrics["delete_visible_on_both_nodes_within_s"] = until("", "delete")
        assert client.get(f"/api/v1/gallery/{photo_id}").status_code == 404


class PhotoLoad:
    """`clients` clients, each sending a photo as soon as its last one is answered, on an event loop in
    a thread of their own, until `stop()`; every answer is kept (when, status, whether a dog was found)."""

    def __init__(self, url: str, clients: int) -> None:
        self.url, self.clients = url, clients
        self.answers: list[tuple[float, int, bool]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=asyncio.run, args=(self._run(),), daemon=True)

    def start(self) -> PhotoLoad:
        self.thread.start()
        return self

    def stop(self) -> list[tuple[float, int, bool]]:
        self.stopping.set()
        self.thread.join(timeout=120)
        return self.answers

    def per_second(self, since: float, until: float) -> float:
        return sum(since <= at < until for at, _, _ in self.answers) / (until - since)

    async def _run(self) -> None:
        photo = PHOTOS["dog"].read_bytes()
        async with httpx.AsyncClient(base_url=self.url, timeout=120) as client:

            async def one_client() -> None:
                while not self.stopping.is_set():
                    answer = await client.post("/api/v1/photos", files={"file": ("dog.jpg", photo, "image/jpeg")})
                    dog = answer.status_code == 200 and answer.json()["is_dog"]
                    self.answers.append((time.monotonic(), answer.status_code, dog))

            await asyncio.gather(*(one_client() for _ in range(self.clients)))


def test_vision_scales_out_on_load_to_both_nodes_and_back_without_a_failed_request(deployed: Deployed):
    """Load one Vision replica cannot keep up with (16 clients: four times its target_ongoing_requests)
    adds the second replica, on the other node; once the load is light again (one client, which goes on
    sending while the extra replica drains) the count falls back to min_replicas. Not one request fails."""
    [vision] = [d for d in scaled_out_config(0)["applications"][0]["deployments"] if d["name"] == "Vision"]
    bounds = vision["autoscaling_config"]
    node_of_replica = {}

    def wait_for_vision(count: int, timeout_s: float = 180) -> float:
        """Seconds until Vision has `count` replicas, all running (none starting or draining)."""
        started = time.monotonic()
        while True:
            replicas = deployed.replicas()["Vision"]
            if [r["state"] for r in replicas] == ["RUNNING"] * count:
                node_of_replica.update({r["replica_id"]: r["node_id"] for r in replicas})
                return time.monotonic() - started
            assert time.monotonic() - started < timeout_s, f"Vision never reached {count} replicas: {replicas}"
            time.sleep(0.5)

    wait_for_vision(bounds["min_replicas"], timeout_s=60)
    heavy = PhotoLoad(deployed.url, clients=16).start()
    light = PhotoLoad(deployed.url, clients=1)
    try:
        time.sleep(6)
        before = heavy.per_second(time.monotonic() - 4, time.monotonic())
        scale_up_s = 6 + wait_for_vision(bounds["max_replicas"])
        assert len(set(node_of_replica.values())) == 2  # one replica on each node
        time.sleep(6)
        after = heavy.per_second(time.monotonic() - 4, time.monotonic())
        light.start()
        heavy.stop()
        scale_down_s = wait_for_vision(bounds["min_replicas"])
        time.sleep(2)  # the light client goes on after the drain
    finally:
        answers = heavy.stop() + light.stop()
    failed = [(status, dog) for _, status, dog in answers if status != 200 or not dog]
    assert answers and failed == [], f"{len(failed)} of {len(answers)} failed: {Counter(failed)}"
    deployed.metrics.update(
        vision_scale_up_s=round(scale_up_s, 1),
        vision_scale_down_s=round(scale_down_s, 1),
        photos_per_s_one_replica=round(before, 1),
        photos_per_s_two_replicas=round(after, 1),
        requests_during_scaling=len(answers),
        failed_during_scaling=len(failed),
    )


def test_the_gallery_rides_out_a_database_restart(deployed: Deployed):
    photo = {"file": ("dog.jpg", PHOTOS["dog"].read_bytes(), "image/jpeg")}
    with httpx.Client(base_url=deployed.url, timeout=60) as client:
        before = add(client, "before the restart")
        assert before.status_code == 201, before.text

        deployed.postgres.stop()
        refused = add(client, "while the database is down")
        assert refused.status_code == 503
        assert refused.json()["detail"] == DATABASE_DOWN
        assert refused.headers["retry-after"]
        search = client.post("/api/v1/photos", files=photo)
        assert search.status_code == 200 and search.json()["top_matches"]  # from the photos in memory
        ready = client.get("/api/v1/ready")
        assert ready.status_code == 503
        assert ready.json()["deployments"]["Gallery"]["detail"] == DATABASE_DOWN

        deployed.postgres.start()
        restarted = time.monotonic()
        after = add(client, "after the restart")  # the pool's dropped connections are replaced
        assert after.status_code == 201, after.text
        assert after.json()["id"] > before.json()["id"]
        assert client.get(f"/api/v1/gallery/{before.json()['id']}/image").status_code == 200
        assert client.get("/api/v1/ready").status_code == 200
        deployed.metrics["add_after_database_restart_s"] = round(time.monotonic() - restarted, 2)


def test_everything_started_is_stopped_by_pid(deployed: Deployed):
    stopped = deployed.cluster.cli(SERVE, "shutdown", "--yes", "--address", deployed.cluster.dashboard_url)
    assert stopped.returncode == 0, stopped.stderr
    started = time.monotonic()
    assert deployed.cluster.stop() == []
    deployed.metrics["cluster_stop_s"] = round(time.monotonic() - started, 1)
    with pytest.raises(httpx.TransportError):
        httpx.get(deployed.url + "/api/v1/ready", timeout=5)
