"""Authentication rules of the HTTP API and of ``actdb serve`` (issue 15.7).

- an empty API key is refused (by ``create_app`` and as a CLI usage error), never read as
  "no key";
- without a key, ``actdb serve`` listens only on a loopback address unless ``--no-auth``;
- ``/healthz`` answers without a key and says nothing but its status (no store path);
- ``/docs``, ``/redoc`` and ``/openapi.json`` need the key like ``/v1`` unless ``public_docs``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import actdb
from actdb.api import create_app
from actdb.cli import main
from actdb.cli.serve_cmd import is_loopback
from actdb.errors import InvalidInput

KEY = "k-0123456789"
DOCS = ("/docs", "/redoc", "/openapi.json")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "store"
    actdb.open(str(path)).close()
    return path


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("key", ["", "   "])
def test_empty_key_is_refused_by_create_app(store: Path, key: str) -> None:
    with pytest.raises(InvalidInput, match="the API key is empty"):
        create_app(store, api_key=key)


def test_healthz_tells_only_status(store: Path) -> None:
    for key in (None, KEY):
        with TestClient(create_app(store, api_key=key)) as c:
            r = c.get("/healthz")
            assert r.status_code == 200 and r.json() == {"status": "ok"}
            assert str(store) not in r.text and "store" not in r.text


def test_docs_follow_the_key_rule(store: Path) -> None:
    with TestClient(create_app(store, api_key=KEY)) as c:
        for path in DOCS:
            r = c.get(path)
            assert r.status_code == 401, path
            assert "X-API-Key" in r.json()["error"]
            assert c.get(path, headers={"X-API-Key": "wrong"}).status_code == 401
            assert c.get(path, headers={"X-API-Key": KEY}).status_code == 200, path
        spec = c.get("/openapi.json", headers={"X-API-Key": KEY}).json()
        assert "/v1/info" in spec["paths"] and "/docs" not in spec["paths"]
        assert c.get("/v1/info").status_code == 401
        info = c.get("/v1/info", headers={"X-API-Key": KEY}).json()
        assert info["catalog"] == "duckdb" and info["read_only"] is False and info["version"]


def test_public_docs_and_no_key(store: Path) -> None:
    with TestClient(create_app(store, api_key=KEY, public_docs=True)) as c:
        for path in DOCS:
            assert c.get(path).status_code == 200, path
        assert c.get("/v1/models").status_code == 401  # only the docs are public
    with TestClient(create_app(store)) as c:  # no key at all: everything open (loopback use)
        for path in (*DOCS, "/v1/models", "/v1/info"):
            assert c.get(path).status_code == 200, path


@pytest.mark.parametrize(("args", "message"), [
    (["--api-key", ""], "--api-key (or ACTDB_API_KEY) is empty"),
    (["--api-key", " "], "--api-key (or ACTDB_API_KEY) is empty"),
    (["--host", "0.0.0.0"], "--host 0.0.0.0 is reachable from other machines and no API key is set"),
    (["--host", "192.168.1.7"], "pass --no-auth if that is intended"),
    (["--host", "::"], "no API key is set"),
    (["--host", "myhost.example"], "no API key is set"),
    (["--api-key", "k", "--no-auth"], "contradict each other"),
])
def test_serve_usage_errors(store: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                            args: list[str], message: str) -> None:
    monkeypatch.delenv("ACTDB_API_KEY", raising=False)
    code, err = _cli(capsys, "serve", str(store), *args)
    assert code == 2, err
    assert message in " ".join(err.split()), err
    assert "Traceback" not in err


def test_serve_empty_key_from_environment(store: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTDB_API_KEY", "")
    code, err = _cli(capsys, "serve", str(store))
    assert code == 2 and "is empty" in err


def test_loopback_hosts() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.org", "localhost.evil.org"))
