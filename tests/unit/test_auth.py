"""API keys, scopes and rate limits (backend/api/auth.py), without a server: the HTTP answers they become
are tested on the running app (tests/api/test_access.py)."""

import re

import pytest
import yaml
from typer.testing import CliRunner

from backend.api.auth import KEYS_ENV, KEYS_FILE_ENV, Access, KeyRing, parse_keys
from retriever import cli as cli_module
from shared.errors import NotAllowed, NotAuthenticated, RateLimited
from shared.rate_limit import RateLimit, TokenBuckets
from tests.conftest import ROOT


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_keys_are_parsed_with_their_scopes_and_only_digests_are_kept():
    keys = parse_keys("reader=s3cret-r:read, writer=s3cret:w:write+read\n ops=x:admin")
    assert [(k.name, sorted(k.scopes)) for k in keys] == [
        ("reader", ["read"]),
        ("writer", ["read", "write"]),  # a secret may hold ':' (the scopes follow the last one)
        ("ops", ["admin"]),
    ]
    assert all(b"s3cret" not in k.digest and len(k.digest) == 32 for k in keys)
    ring = KeyRing("reader=s3cret-r:read,writer=s3cret:w:write+read")
    assert ring.find("s3cret:w").name == "writer" and ring.find("s3cret") is None and ring.find("") is None


@pytest.mark.parametrize(
    "text, problem",
    [
        ("reader=topsecret", "key 1 (reader): expected name=secret:scope"),
        ("=topsecret:read", "key 1 (?): expected"),
        ("a=x:read, b=topsecret:root", "key 2 (b): unknown scope 'root'"),
        ("a=x:read, a=topsecret:write", "key name 'a' is given twice"),
    ],
)
def test_a_malformed_key_is_named_by_position_never_by_its_secret(text, problem):
    with pytest.raises(ValueError, match=re.escape(problem)) as refused:
        parse_keys(text)
    assert "topsecret" not in str(refused.value)


def test_a_keys_file_is_read_again_when_it_changes(tmp_path):
    path = tmp_path / "keys"
    path.write_text("# operators\nalice=one:read\n")
    clock = Clock()
    ring = KeyRing("env=zero:read", str(path), clock=clock)
    assert [k.name for k in ring.keys()] == ["env", "alice"]
    path.write_text("bob=two:write\n")  # alice revoked, bob added
    assert ring.find("one").name == "alice"  # checked at most once a second
    clock.now += 1.5
    assert ring.find("one") is None and ring.find("two").name == "bob"
    path.write_text("carol=three:nonsense\n")  # a broken edit keeps the keys that worked
    clock.now += 1.5
    assert [k.name for k in ring.keys()] == ["env", "bob"]
    with pytest.raises(FileNotFoundError):
        KeyRing("", str(tmp_path / "missing"))


def test_token_bucket_allows_a_burst_then_the_rate():
    clock = Clock()
    buckets = TokenBuckets(RateLimit(requests_per_s=2, burst=3), clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0, 0, 0]
    assert buckets.take("a") == pytest.approx(0.5)  # the next token in half a second
    assert buckets.take("b") == 0  # callers have buckets of their own
    clock.now += 0.5
    assert buckets.take("a") == 0 and buckets.take("a") == pytest.approx(0.5)
    clock.now += 60
    assert [buckets.take("a") for _ in range(4)][-1] > 0  # refilled to the burst, not beyond


def test_access_matrix_and_the_open_default(tmp_path):
    keys = KeyRing("reader=r:read,writer=w:write")
    access = Access(keys)
    assert access.admit("10.0.0.1", "r", "read", limited=True).key == "reader"
    assert access.admit("10.0.0.1", "w", "write", limited=False).identity == "key:writer"
    for secret, scope, refusal in [
        (None, "read", NotAuthenticated),
        ("wrong", "read", NotAuthenticated),
        ("r", "write", NotAllowed),
        ("w", "read", NotAllowed),
    ]:
        with pytest.raises(refusal):
            access.admit("10.0.0.1", secret, scope, limited=False)
    # No key configured: everyone may do everything, counted by address for rate limits.
    open_api = Access(KeyRing(""), RateLimit(requests_per_s=1, burst=1))
    assert open_api.admit("10.0.0.1", None, "write", limited=True).identity == "address:10.0.0.1"
    with pytest.raises(RateLimited) as limited:
        open_api.admit("10.0.0.1", None, "read", limited=True)
    assert 0 < limited.value.retry_after_s <= 1 and "1 per second" in str(limited.value)
    assert open_api.admit("10.0.0.1", None, "read", limited=False)  # cheap routes are not counted
    assert open_api.admit("10.0.0.2", None, "read", limited=True)
    open_api.set_rate_limit(None)
    assert open_api.admit("10.0.0.1", None, "read", limited=True)


def beyond_loopback_config(tmp_path) -> str:
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    config["http_options"]["host"] = "0.0.0.0"
    path = tmp_path / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_up_refuses_an_open_api_beyond_loopback_before_starting_anything(tmp_path, monkeypatch):
    monkeypatch.delenv(KEYS_ENV, raising=False)
    monkeypatch.delenv(KEYS_FILE_ENV, raising=False)
    started = []
    monkeypatch.setattr(cli_module, "start_local_serve", lambda *a, **k: started.append(1))
    result = CliRunner().invoke(cli_module.cli, ["up", "--config", beyond_loopback_config(tmp_path)])
    assert result.exit_code == 2 and started == []
    assert "The API would listen on 0.0.0.0 with no API key" in result.output and "--open-api" in result.output


def test_up_refuses_malformed_keys_without_echoing_a_secret(tmp_path, monkeypatch):
    monkeypatch.setenv(KEYS_ENV, "ops=hunter2-secret:superuser")
    result = CliRunner().invoke(cli_module.cli, ["up", "--config", beyond_loopback_config(tmp_path)])
    assert result.exit_code == 2 and "unknown scope 'superuser'" in result.output
    assert "hunter2" not in result.output
