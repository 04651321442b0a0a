"""The scale-out deployment, for real on one machine: an S3-compatible object store
(moto's server mode, started here on 127.0.0.1 on a free port) for the arrays, the
PostgreSQL server for the catalog, and a dask.distributed cluster of worker processes
for the queries. Endpoint and credentials reach actdb the way they would in production:
through the standard AWS environment variables."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "faults"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An empty bucket on a fresh moto server; yields its ``s3://`` URL. The AWS_*
    variables point every process started from here (dask workers too) at it."""
    pytest.importorskip("s3fs", reason="the deployment suite needs s3fs and moto[server] (the test extra)")
    port = _free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")  # noqa: SIM115 - the server's log, closed at teardown
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="actdb-test", AWS_SECRET_ACCESS_KEY="actdb-test",
                      AWS_DEFAULT_REGION="us-east-1")
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            pytest.fail(f"moto server did not start on {endpoint}")
        import s3fs

        fs = s3fs.S3FileSystem(skip_instance_cache=True)
        fs.mkdir("actdb-arrays")
        yield "s3://actdb-arrays"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A dask.distributed LocalCluster of 2 worker processes; yields its address."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        yield str(c.scheduler_address)
