"""Hostile text through every name and text entry point (issue 15.8, text part).

Generated strings, lone surrogates (``"\\ud800"``), NUL and control characters included,
go through ``add_model``, ``add_checkpoint``, ``add_dataset`` (name, texts, labels),
``write_rep`` (model, checkpoint, dataset, site and tokenizer names) and the lookups of
those names, on DuckDB and PostgreSQL. Each call either succeeds and reads back exactly
what was given, or raises :class:`InvalidInput` (:class:`AlreadyExists` for a name
already stored with other contents) with a one-line message; never any other exception
(before the fix: TypeError, UnicodeEncodeError, ProgrammingError tracebacks). The CLI
reads a JSONL text with a ``"\\ud800"`` escape and exits 1 with a one-line error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import actdb
from actdb.errors import AlreadyExists, InvalidInput, NotFound

# every code point, surrogates included (hypothesis leaves out category Cs by default)
ANY_CHAR = st.characters(exclude_categories=())
HOSTILE = st.sampled_from(["\ud800", "a\udcff", "\udfff\ud800", "x\x00y", "\n", " a", "..", "a/b", "é", "🙂",
                           "\u202e", "\ufeff", "'; DROP TABLE model; --", "hidden.1"])
TEXT = st.one_of(st.text(ANY_CHAR, max_size=12), HOSTILE,
                 st.builds(lambda a, b: a + b, HOSTILE, st.text(ANY_CHAR, max_size=4)))
N = 3  # examples per dataset


def _allowed(exc: BaseException) -> None:
    """The allowed failures: our typed errors with a one-line message (NotFound for a
    lookup of a well-formed name that is not stored)."""
    if not isinstance(exc, (InvalidInput, AlreadyExists, NotFound)):
        raise exc
    message = str(exc)
    assert message and "\n" not in message, message
    message.encode("utf-8")  # printable: the message itself holds no lone surrogate


def _attempt(call: Any) -> Any:
    try:
        return call()
    except Exception as exc:  # checked by _allowed
        _allowed(exc)
        return None


@pytest.fixture(scope="module", params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def hostile_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    url = None if request.param == "duckdb" else str(request.getfixturevalue("pg_url_module"))
    db = actdb.open(str(tmp_path_factory.mktemp("hostile") / "store"), catalog_url=url)
    db.add_dataset("base", ["one", "two", "three"])
    yield db
    db.close()


@pytest.fixture(scope="module")
def pg_url_module(pg_server: str):  # type: ignore[no-untyped-def]
    import uuid

    import sqlalchemy as sa

    schema = f"actdb_test_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(pg_server)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{pg_server}?options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        engine.dispose()


SETTINGS = settings(max_examples=10, deadline=None, derandomize=True, database=None,
                    phases=[Phase.explicit, Phase.generate],  # a failure is shown as generated (no slow shrink)
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@SETTINGS
@given(name=TEXT)
def test_model_and_checkpoint_names(hostile_db: Any, name: str) -> None:
    model = _attempt(lambda: hostile_db.add_model(name))
    if model is not None:
        assert model.name == name and hostile_db.model(name).name == name
    ck = _attempt(lambda: hostile_db.add_checkpoint("m", name))
    if ck is not None:
        assert ck.name == name and hostile_db.checkpoint("m", name).name == name
    for lookup in (lambda: hostile_db.checkpoint("m", name), lambda: hostile_db.dataset(name)):
        try:
            lookup()
        except NotFound as exc:
            assert "\n" not in str(exc)
        except Exception as exc:
            _allowed(exc)


@SETTINGS
@given(name=TEXT, texts=st.lists(TEXT, min_size=N, max_size=N), labels=st.lists(TEXT, min_size=N, max_size=N))
def test_dataset_names_texts_and_labels(hostile_db: Any, name: str, texts: list[str], labels: list[str]) -> None:
    info = _attempt(lambda: hostile_db.add_dataset(name, texts, labels=labels))
    if info is None:
        return
    assert info.name == name and hostile_db.dataset(name) == info
    assert hostile_db.texts(name) == texts
    assert hostile_db.examples(name).column("label").to_pylist() == labels


@SETTINGS
@given(model=TEXT, checkpoint=TEXT, site=TEXT, tokenizer=TEXT)
def test_write_rep_names(hostile_db: Any, model: str, checkpoint: str, site: str, tokenizer: str) -> None:
    values = np.arange(N * 2, dtype=np.float32).reshape(N, 2)
    rep = _attempt(lambda: hostile_db.write_rep(model, checkpoint, "base", site, values, pooling="mean",
                                                 overwrite=True))
    if rep is not None:
        assert (rep.model, rep.checkpoint, rep.site) == (model, checkpoint, site)
        again = hostile_db.rep(rep.id)
        assert (again.model, again.checkpoint, again.site) == (model, checkpoint, site)
    tokens = {"example": [0, 1, 2], "position": [0, 0, 0], "token_id": [1, 2, 3], "token": [tokenizer] * 3}
    rep = _attempt(lambda: hostile_db.write_rep("m", "final", "base", "hidden.1", values, tokens=tokens,
                                                 tokenizer=tokenizer, overwrite=True))
    if rep is not None:
        assert rep.tokenizer == tokenizer
        assert hostile_db.token_table(rep.tokenization_id).column("token").to_pylist() == [tokenizer] * 3
    _attempt(lambda: hostile_db.write_rep("m", "final", "base", "hidden.2", values, tokenizer=tokenizer,
                                          overwrite=True))
    _attempt(lambda: hostile_db.write_rep("m", "final", tokenizer, "hidden.2", values, pooling="mean"))


def test_lone_surrogate_messages(hostile_db: Any) -> None:
    with pytest.raises(InvalidInput, match=r"^text 1 of dataset 'x' is not valid UTF-8 \(lone surrogate U\+D800 "
                                           r"at character 2\)"):
        hostile_db.add_dataset("x", ["fine", "ab\ud800c"])
    with pytest.raises(InvalidInput, match=r"label 0 of dataset 'x' is not valid UTF-8"):
        hostile_db.add_dataset("x", ["fine"], labels=["\udc80"])
    with pytest.raises(InvalidInput, match=r"^model name 'm\\udcff' is not valid UTF-8"):
        hostile_db.add_model("m\udcff")
    with pytest.raises(InvalidInput, match=r"text 0 of dataset 'x' contains a NUL character"):
        hostile_db.add_dataset("x", ["a\x00b"])


def test_cli_ingest_jsonl_with_a_surrogate_escape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from actdb.cli import main

    path = tmp_path / "texts.jsonl"
    path.write_text(json.dumps({"text": "ok", "label": "y"}) + "\n" + '{"text": "bad \\ud800 here", "label": "x"}\n',
                    encoding="utf-8")
    try:
        main(["ingest", str(tmp_path / "s"), "--model", str(tmp_path / "no-model"), "--dataset", "d",
              "--texts", str(path), "--label-column", "label", "-q"])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == 1, err  # an input error (2 is for usage errors)
    assert "Traceback" not in err
    assert "is not valid UTF-8 (lone surrogate U+D800 at character 4)" in " ".join(err.split())
    assert "text 1 of" in err and "texts.jsonl" in err
