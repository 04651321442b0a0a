"""Persistent attachments: other stores a store mounts read-only, kept in its ``actdb.json``.

A store's marker file (``STORE/actdb.json``, next to ``catalog_url``) holds an
``"attached"`` object ``{name: {"path": ..., "catalog_url": ...}}``. A path under
``path`` is stored relative to the store directory when the attached store lies on the
same filesystem tree (so moving both stores together keeps the attachment working) and is
resolved against the store directory on open. The marker is rewritten atomically (temp
file + rename), keeping every other key, as :class:`actdb.store.Store` writes it.

Every face honours attachments because :class:`actdb.database.Database` reads them when
it opens a store: Python (``actdb.open``), the CLI and the HTTP server (``actdb serve``).
The attached store itself is opened lazily, read-only, on first use, so a store whose
attachment has moved still opens; using the attachment then fails with a message that
names the recorded path and the fix.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actdb.errors import CorruptStore, InvalidInput

MARKER = "actdb.json"


@dataclass(frozen=True)
class Attachment:
    """One attached store: its ``name``, the ``path`` as recorded (relative to the store, or
    absolute), the ``resolved`` absolute path, an optional ``catalog_url``, and whether it
    is ``persisted`` in the store's configuration or lasts this process only."""

    name: str
    path: str
    resolved: Path
    catalog_url: str | None = None
    persisted: bool = False

    @property
    def exists(self) -> bool:
        """Whether an actdb store (a directory with ``actdb.json``) is at the resolved path."""
        return "://" in self.path or (self.resolved / MARKER).is_file()


def _marker(store_path: Path) -> Path:
    return store_path / MARKER


def read_marker(store_path: Path) -> dict[str, Any]:
    """The store's marker as a dict (``{}`` when absent)."""
    marker = _marker(store_path)
    if not marker.is_file():
        return {}
    try:
        data = json.loads(marker.read_text())
    except ValueError as exc:
        raise CorruptStore(f"{marker} is not valid JSON ({exc}); restore it from a backup") from None
    if not isinstance(data, dict):
        raise CorruptStore(f"{marker} does not hold a JSON object; restore it from a backup")
    return data


def write_marker(store_path: Path, data: dict[str, Any]) -> None:
    """Rewrite the marker atomically: a temp file in the same directory, then rename."""
    marker = _marker(store_path)
    tmp = store_path / f"{MARKER}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(marker)


def recorded_path(store_path: Path, target: Path) -> str:
    """How ``target`` (absolute) is recorded: relative to the store when possible."""
    try:
        return os.path.relpath(target, store_path)
    except ValueError:  # another drive on Windows
        return str(target)


def resolve(store_path: Path, recorded: str) -> Path:
    """The absolute path of a recorded attachment path (relative ones are against the store)."""
    p = Path(recorded).expanduser()
    return (p if p.is_absolute() else store_path / p).resolve()


def load(store_path: Path) -> dict[str, Attachment]:
    """The persisted attachments of the store at ``store_path``, by name."""
    raw = read_marker(store_path).get("attached") or {}
    if not isinstance(raw, dict):
        raise CorruptStore(f"{_marker(store_path)}: 'attached' must be an object of name -> {{path}}")
    out = {}
    for name, entry in raw.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise CorruptStore(f"{_marker(store_path)}: attachment {name!r} has no path; "
                               f"fix it with `actdb detach {store_path} {name}` and attach it again")
        out[name] = Attachment(name, entry["path"], resolve(store_path, entry["path"]),
                               entry.get("catalog_url"), persisted=True)
    return out


def save(store_path: Path, attachment: Attachment) -> None:
    """Add one attachment to the store's configuration (the name must be new there)."""
    data = read_marker(store_path)
    attached = dict(data.get("attached") or {})
    if attachment.name in attached:
        raise InvalidInput(f"a store named {attachment.name!r} is already attached to {store_path}")
    entry: dict[str, Any] = {"path": attachment.path}
    if attachment.catalog_url is not None:
        entry["catalog_url"] = attachment.catalog_url
    attached[attachment.name] = entry
    data["attached"] = attached
    write_marker(store_path, data)


def remove(store_path: Path, name: str) -> bool:
    """Remove one attachment from the store's configuration; whether it was there."""
    data = read_marker(store_path)
    attached = dict(data.get("attached") or {})
    if name not in attached:
        return False
    del attached[name]
    if attached:
        data["attached"] = attached
    else:
        data.pop("attached", None)
    write_marker(store_path, data)
    return True


def moved_message(store_path: Path, att: Attachment) -> str:
    """What to say when an attached store is not where it was recorded."""
    where = f"{att.path!r} (resolved to {str(att.resolved)!r})" if att.path != str(att.resolved) \
        else repr(att.path)
    if not att.persisted:
        return (f"attached store {att.name!r} is no longer at {where}: no actdb store there; "
                f"attach it again from its new path with db.attach(path, name={att.name!r})")
    return (f"attached store {att.name!r} is no longer at {where}, recorded in {_marker(store_path)}: "
            f"no actdb store there. If it moved, run `actdb detach {store_path} {att.name}` then "
            f"`actdb attach {store_path} NEW_PATH --name {att.name}` "
            f"(Python: db.detach({att.name!r}); db.attach(NEW_PATH, name={att.name!r}, persist=True))")
