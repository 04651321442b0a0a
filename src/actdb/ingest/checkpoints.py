"""Checkpoint sweeps: which weights to run, under which names and step numbers.

A sweep is a list of ``name=path`` / ``name=revision`` specs (or a dict, or
``(name, value)`` pairs), or a folder whose ``checkpoint-*`` / ``step*`` subfolders are
the checkpoints (a model saved at the folder's root is included as ``final``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actdb.errors import InvalidInput, NotFound
from actdb.models import check_model_folder
from actdb.store.parse import parse_name

_STEP = re.compile(r"^(?:checkpoint|step|ckpt|iter)[-_]?(\d+)$", re.IGNORECASE)


@dataclass(frozen=True)
class CheckpointSpec:
    """One checkpoint to ingest: its store name, where its weights come from, its step."""

    name: str
    source: str  # a local folder or a hub id
    revision: str | None = None
    step: int | None = None
    tokens_seen: int | None = None


def step_of(name: str) -> int | None:
    """``checkpoint-1000`` / ``step1000`` / ``step_1000`` -> 1000, else None."""
    m = _STEP.match(name)
    return int(m.group(1)) if m else None


def _trainer_state(folder: Path) -> tuple[int | None, int | None]:
    """(global_step, tokens seen) from a Hugging Face Trainer's ``trainer_state.json``, if present."""
    path = folder / "trainer_state.json"
    if not path.is_file():
        return None, None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        step = state.get("global_step")
        seen = state.get("num_input_tokens_seen")
        return (int(step) if step is not None else None, int(seen) if seen else None)
    except (ValueError, OSError, TypeError):
        return None, None


def is_sweep_folder(path: str | os.PathLike[str]) -> bool:
    folder = Path(path).expanduser()
    return folder.is_dir() and any(p.is_dir() and step_of(p.name) is not None for p in folder.iterdir())


def sweep_folder(path: str | os.PathLike[str]) -> list[CheckpointSpec]:
    """The checkpoints of a folder of ``checkpoint-*`` / ``step*`` subfolders, by step
    (plus ``final`` for a model saved at the root)."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise NotFound(f"checkpoints folder {str(folder)!r} does not exist")
    found = []
    for sub in folder.iterdir():
        step = step_of(sub.name) if sub.is_dir() else None
        if step is not None:
            check_model_folder(sub)
            state_step, seen = _trainer_state(sub)
            found.append(CheckpointSpec(sub.name, str(sub.resolve()), None, step, seen))
    if (folder / "config.json").is_file():
        check_model_folder(folder)
        state_step, seen = _trainer_state(folder)
        found.append(CheckpointSpec("final", str(folder.resolve()), None, state_step, seen))
    if not found:
        subs = sorted(p.name for p in folder.iterdir() if p.is_dir())
        raise InvalidInput(f"{folder} holds no checkpoint-N or stepN subfolders (and no model at its root); "
                           f"its subfolders: {', '.join(subs[:10]) or 'none'}")
    return sorted(found, key=lambda c: (c.step is None, c.step if c.step is not None else 0, c.name))


def parse_checkpoints(checkpoints: Any, model: str) -> list[CheckpointSpec]:
    """Normalise ``checkpoints=`` against the model source ``model``.

    None: the model itself, as checkpoint ``final`` (or a sweep when ``model`` is a sweep
    folder). A folder path: :func:`sweep_folder`. A dict / list of ``name=value`` or
    ``(name, value)``: value is a local folder if one exists there, else a revision of
    ``model`` on the hub.
    """
    if checkpoints is None:
        if is_sweep_folder(model) and not (Path(model).expanduser() / "config.json").is_file():
            return sweep_folder(model)
        return [CheckpointSpec("final", model)]
    if isinstance(checkpoints, (str, os.PathLike)) and "=" not in os.fspath(checkpoints):
        return sweep_folder(checkpoints)
    if isinstance(checkpoints, dict):
        pairs: Iterable[Any] = checkpoints.items()
    elif isinstance(checkpoints, (str, os.PathLike)):
        pairs = [checkpoints]
    else:
        pairs = checkpoints
    specs: list[CheckpointSpec] = []
    for item in pairs:
        if isinstance(item, (str, os.PathLike)):
            text = os.fspath(item)
            if "=" not in text:
                raise InvalidInput(f"checkpoint {text!r} must be NAME=PATH or NAME=REVISION "
                                   "(e.g. step1000=./ckpt/1000)")
            name, value = text.split("=", 1)
        else:
            try:
                name, value = item
            except (TypeError, ValueError):
                raise InvalidInput(f"checkpoint {item!r} must be 'NAME=PATH_OR_REVISION' or a (name, value) "
                                   "pair") from None
        name = parse_name(str(name).strip(), "checkpoint")
        value = os.fspath(value).strip()
        if not value:
            raise InvalidInput(f"checkpoint {name!r} has an empty path/revision")
        local = Path(value).expanduser()
        if local.exists() or value.startswith((".", "/", "~")):
            folder = check_model_folder(local)
            state_step, seen = _trainer_state(folder)
            step = step_of(name)
            specs.append(CheckpointSpec(name, str(folder.resolve()), None,
                                        step if step is not None else state_step, seen))
        else:
            step = step_of(name)
            specs.append(CheckpointSpec(name, model, value, step if step is not None else step_of(value)))
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InvalidInput(f"checkpoint name(s) {dup} given more than once")
    if not specs:
        raise InvalidInput("checkpoints= is empty; give at least one NAME=PATH_OR_REVISION")
    return specs
