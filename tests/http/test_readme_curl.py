"""The README's HTTP examples, run as written: `actdb serve` as a real process and each
`curl` line through bash (only the port is changed, to a free one)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def http_block() -> list[str]:
    """The bash block under '### HTTP', continuation lines joined, comments kept (bash ignores them)."""
    section = README.split("### HTTP", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)  # type: ignore[union-attr]
    commands, current = [], ""
    for line in block.splitlines():
        current += line + "\n"
        if not line.rstrip().endswith("\\") and not _open_quote(current):
            commands.append(current.strip())
            current = ""
    return [c for c in commands if c]


def _open_quote(text: str) -> bool:
    return text.count("'") % 2 == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(not Path("/usr/bin/curl").exists() and not any(
    (Path(p) / "curl").exists() for p in os.environ.get("PATH", "").split(os.pathsep)),
    reason="curl is not installed: the README's lines are curl commands")
def test_readme_curl_lines_run_verbatim(tmp_path):
    code = re.findall(r"```python\n(.*?)```", README, flags=re.S)[0]
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        scope: dict = {}
        exec(compile(code, "README.md", "exec"), scope)  # our own README: builds mystore
        scope["db"].close()
    finally:
        os.chdir(cwd)
    commands = http_block()
    serve_line, curls = commands[0], commands[1:]
    assert serve_line.startswith("ACTDB_API_KEY=secret actdb serve mystore --port 8000")
    assert len(curls) == 6 and all(c.startswith("curl ") for c in curls)
    port = free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(["bash", "-c", serve_line.replace("8000", str(port))], cwd=tmp_path, env=env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "actdb serve did not start"
            time.sleep(0.2)
        outputs = []
        for line in curls:
            out = subprocess.run(["bash", "-c", line.replace("localhost:8000", f"localhost:{port}")], cwd=tmp_path,
                                 capture_output=True, timeout=120)
            assert out.returncode == 0, (line, out.stderr)
            outputs.append(out.stdout)
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        log.close()
    health, reps, compare, results, sql, plot = outputs
    assert json.loads(health)["status"] == "ok"
    assert {r["layer"] for r in json.loads(reps)} == {0, 1}  # a:b is half-open
    rows = json.loads(compare)["rows"]  # was: {"error": "malformed request: body: Input should be a valid dict..."}
    assert len(rows) == 6 and {r["measure"] for r in rows} == {"linear_cka", "procrustes"}
    assert b"measure" in results.splitlines()[0]  # CSV header
    assert len(results.decode().splitlines()) == 1 + 3  # the 3 linear_cka values just cached
    assert list(json.loads(sql)["rows"][0].values()) == [7]  # 6 pooled reps + 1 token-level
    assert plot == b"" and (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_json_body_whatever_the_declared_type(tmp_path):
    """A JSON body with a form (curl's default) or text content type is read as JSON; a
    body that is not JSON is still a 422 that says what is wrong."""
    from fastapi.testclient import TestClient

    sys.path.insert(0, str(Path(__file__).parent))
    from _server import make_store

    from actdb.api import create_app

    store = make_store(tmp_path / "s", warm=False)
    with TestClient(create_app(store)) as client:
        body = '{"query": "SELECT count(*) AS n FROM reps"}'
        for ctype in ("application/x-www-form-urlencoded", "text/plain", None):
            headers = {"Content-Type": ctype} if ctype else {}
            res = client.post("/v1/sql", content=body, headers=headers)
            assert res.status_code == 200, (ctype, res.text)
            assert res.json()["rows"][0]["n"] > 0
        bad = client.post("/v1/sql", content="query=SELECT 1",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert bad.status_code == 422 and "malformed request" in bad.json()["error"]
