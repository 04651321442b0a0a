"""BI outputs: exported files and their schema description, the documented
`dissimilarities` contract, and the views read with `psql` from a PostgreSQL catalog."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

import actdb
from actdb.errors import InvalidInput
from actdb.export import COLUMN_DOCS, export_views

ROOT = Path(__file__).parents[1]


def _fill(db: actdb.Database) -> None:
    spec = importlib.util.spec_from_file_location("actdb_tests_query_data_export",
                                                  ROOT / "tests" / "query" / "query_data.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.fill(db)


@pytest.fixture
def warm(tmp_path):  # type: ignore[no-untyped-def]
    db = actdb.open(str(tmp_path / "s"))
    _fill(db)
    db.reps(layer=1).compare(measure=["linear_cka", "procrustes"], pairs="to_reference:final").compute()
    yield db
    db.close()


def test_export_parquet_round_trips_the_views(warm, tmp_path):
    report = export_views(warm, tmp_path / "out")
    assert set(report.files) == {"dissimilarities", "reps", "models", "checkpoints"}
    for name, path in report.files.items():
        assert pq.read_table(path).equals(warm.sql(f"SELECT * FROM {name}", max_rows=None)), name
    dis = pq.read_table(report.files["dissimilarities"])
    assert dis.num_rows == 4 and sorted(set(dis.column("measure").to_pylist())) == ["linear_cka", "procrustes"]
    schema = json.loads(report.schema_file.read_text())
    cols = {c["name"]: c for c in schema["views"]["dissimilarities"]["columns"]}
    assert cols["value"]["type"] == "double" and cols["layer_a"]["type"] == "integer"
    assert cols["computed_at"]["type"] == "timestamp" and schema["views"]["reps"]["rows"] == 12


def test_every_exported_column_is_described(warm, tmp_path):
    schema = json.loads(export_views(warm, tmp_path / "out").schema_file.read_text())
    for view, entry in schema["views"].items():
        undocumented = [c["name"] for c in entry["columns"] if not c["description"]]
        assert not undocumented, f"{view}: describe {undocumented} in actdb.export.COLUMN_DOCS"
        assert [c["name"] for c in entry["columns"]] == list(COLUMN_DOCS[view]), view


def test_dissimilarities_contract_is_in_the_docs():
    text = (ROOT / "docs" / "interfaces.md").read_text()
    for column in COLUMN_DOCS["dissimilarities"]:
        assert re.search(rf"^\| `{column}` \|", text, re.M), f"docs/interfaces.md lacks column {column}"


def test_export_csv_and_bad_arguments(warm, tmp_path):
    report = export_views(warm, tmp_path / "csv", fmt="csv", views=["checkpoints"])
    table = pcsv.read_csv(report.files["checkpoints"])
    assert table.column("checkpoint").to_pylist() == ["step10", "step100", "final"]
    with pytest.raises(InvalidInput, match="parquet or csv"):
        export_views(warm, tmp_path / "x", fmt="xlsx")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="cannot export view"):
        export_views(warm, tmp_path / "x", views=["result; DROP"])


@pytest.mark.postgres
def test_psql_reads_the_views_of_a_postgres_catalog(tmp_path, pg_url):
    psql = shutil.which("psql")
    if psql is None:
        pytest.skip("psql is not installed")
    store = tmp_path / "pg"
    out = subprocess.run([sys.executable, "-m", "actdb", "init", str(store), "--catalog", pg_url],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "postgresql" in out.stdout, out.stderr
    db = actdb.open(str(store))  # the catalog URL is remembered in the store
    _fill(db)
    rows = db.reps(layer=2).compare(measure="linear_cka", pairs="to_reference:final").compute().rows
    db.close()
    libpq = pg_url.replace("postgresql+psycopg://", "postgresql://")
    query = ("SELECT measure, checkpoint_a, layer_a, checkpoint_b, round(value::numeric, 9) "
             "FROM dissimilarities ORDER BY step_a")
    got = subprocess.run([psql, libpq, "-X", "-A", "-t", "-F", ",", "-v", "ON_ERROR_STOP=1", "-c", query],
                         capture_output=True, text=True, timeout=60)
    assert got.returncode == 0, got.stderr
    assert got.stdout.split() == [f"linear_cka,{r['checkpoint_a']},2,final,{r['value']:.9f}" for r in rows]
    counts = subprocess.run([psql, libpq, "-X", "-A", "-t", "-c",
                             "SELECT (SELECT count(*) FROM reps) || ',' || (SELECT count(*) FROM models) || ',' "
                             "|| (SELECT count(*) FROM checkpoints)"], capture_output=True, text=True, timeout=60)
    assert counts.stdout.strip() == "12,1,3"
