"""Text sources and checkpoint specs (no model needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actdb.errors import InvalidInput, NotFound
from actdb.ingest import load_texts, parse_checkpoints
from actdb.ingest.checkpoints import step_of


def test_list_and_files(tmp_path: Path) -> None:
    assert load_texts(["a", "b"]).texts == ["a", "b"]
    (tmp_path / "t.txt").write_text("first\r\nsecond é\n", encoding="utf-8")
    got = load_texts(tmp_path / "t.txt")
    assert (got.texts, got.labels, got.name) == (["first", "second é"], None, "t")
    rows = [{"text": "a", "y": 1}, {"text": "b", "y": 0}]
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    got = load_texts(tmp_path / "t.jsonl", label_column="y")
    assert (got.texts, got.labels) == (["a", "b"], [1, 0])
    (tmp_path / "t.csv").write_text('body,y\n"with, comma",pos\nplain,neg\n')
    got = load_texts(str(tmp_path / "t.csv"), text_column="body", label_column="y")
    assert (got.texts, got.labels) == (["with, comma", "plain"], ["pos", "neg"])
    pq.write_table(pa.table({"text": ["p", "q"], "lab": ["x", None]}), tmp_path / "t.parquet")
    got = load_texts(tmp_path / "t.parquet", label_column="lab")
    assert (got.texts, got.labels) == (["p", "q"], ["x", None])


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "bom.txt").write_bytes("\ufeffhello\n".encode())
    assert load_texts(tmp_path / "bom.txt").texts == ["hello"]


class FakeDataset:
    """Duck-typed like datasets.Dataset: column_names and ds[column] -> list."""

    column_names: ClassVar[list[str]] = ["sentence", "label"]

    def __getitem__(self, key: str) -> list[object]:
        return {"sentence": ["s1", "s2"], "label": [0, 1]}[key]


def test_dataset_objects() -> None:
    got = load_texts(FakeDataset(), text_column="sentence", label_column="label")
    assert (got.texts, got.labels) == (["s1", "s2"], [0, 1])
    with pytest.raises(InvalidInput, match="FakeDataset has no text column 'text'; its columns: 'sentence', 'label'"):
        load_texts(FakeDataset())
    table = pa.table({"text": ["u", "v"]})
    assert load_texts(table).texts == ["u", "v"]
    pd = pytest.importorskip("pandas", reason="pandas is a dependency of actdb")
    assert load_texts(pd.DataFrame({"text": ["w"]})).texts == ["w"]


def test_non_strings_refused() -> None:
    with pytest.raises(InvalidInput, match="text 1 is int 5, not a string"):
        load_texts(["a", 5])
    with pytest.raises(InvalidInput, match="not a dict"):
        load_texts({"text": ["a"]})


def test_step_names() -> None:
    assert [step_of(n) for n in ("checkpoint-1000", "step1000", "step_7", "final", "stepper")] == \
        [1000, 1000, 7, None, None]


def _fake_model(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    return folder


def test_checkpoint_specs(tmp_path: Path) -> None:
    a = _fake_model(tmp_path / "runs" / "checkpoint-20")
    _fake_model(tmp_path / "runs" / "checkpoint-3")
    (tmp_path / "runs" / "logs").mkdir()
    specs = parse_checkpoints(tmp_path / "runs", "m")
    assert [(s.name, s.step) for s in specs] == [("checkpoint-3", 3), ("checkpoint-20", 20)]
    assert parse_checkpoints(None, str(tmp_path / "runs")) == specs  # a sweep folder as the model
    (a / "trainer_state.json").write_text(json.dumps({"global_step": 20, "num_input_tokens_seen": 5120}))
    specs = parse_checkpoints([f"late={a}", "early=step10"], "org/model")
    assert (specs[0].name, specs[0].source, specs[0].revision, specs[0].step, specs[0].tokens_seen) == \
        ("late", str(a.resolve()), None, 20, 5120)
    assert (specs[1].name, specs[1].source, specs[1].revision, specs[1].step) == ("early", "org/model", "step10", 10)
    assert parse_checkpoints({"x": a}, "m")[0].source == str(a.resolve())
    with pytest.raises(InvalidInput, match=r"checkpoint name\(s\) \['x'\] given more than once"):
        parse_checkpoints(["x=main", "x=v2"], "m")
    with pytest.raises(NotFound, match="does not exist"):
        parse_checkpoints([f"y={tmp_path / 'missing'}"], "m")
    (tmp_path / "plain").mkdir()
    with pytest.raises(InvalidInput, match="holds no checkpoint-N or stepN subfolders"):
        parse_checkpoints(tmp_path / "plain", "m")
