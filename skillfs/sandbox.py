"""Bind mounts of one space into a sandbox, remembered so they can be made again.

A bind mount of a FUSE folder dies with the daemon that served it: after a restart the
sandbox sees "Transport endpoint is not connected" until it is bound again. The bindings are
kept in `sandboxes.json` in the data directory; `skillfs sandbox rebind` (and the daemon at
start, where it is allowed to mount) replaces dead ones and makes missing ones.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from .mounts import mount_state

FILE = "sandboxes.json"


@dataclass(frozen=True)
class Binding:
    space: str
    dir: str
    ro: bool


class BindError(Exception):
    pass


def load(home: Path) -> list[Binding]:
    try:
        rows = json.loads((home / FILE).read_text())
    except FileNotFoundError:
        return []
    return [Binding(r["space"], r["dir"], bool(r["ro"])) for r in rows]


def save(home: Path, bindings: list[Binding]) -> None:
    tmp = home / (FILE + ".tmp")
    tmp.write_text(json.dumps([asdict(b) for b in bindings], indent=2) + "\n")
    os.replace(tmp, home / FILE)


def state(path: str) -> str:
    """'bound', 'stale' (its daemon is gone) or 'free'."""
    return {"mounted": "bound", "stale": "stale"}.get(mount_state(Path(path)), "free")


def _run(*cmd: str) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise BindError(f"{' '.join(cmd)}: {r.stderr.strip() or 'failed'}")


def bind(mountpoint: Path, b: Binding) -> str:
    """Make one binding; return what was done."""
    src = mountpoint / b.space
    if not src.is_dir():
        raise BindError(f"there is no space {b.space!r} under {mountpoint}")
    now = state(b.dir)
    if now == "bound":
        return "already bound"
    if now == "stale":
        _run("umount", "-l", b.dir)
    Path(b.dir).mkdir(parents=True, exist_ok=True)
    _run("mount", "--bind", str(src), b.dir)
    if b.ro:
        _run("mount", "-o", "remount,ro,bind", b.dir)
    return "bound again" if now == "stale" else "bound"


def unbind(b: Binding) -> None:
    if state(b.dir) != "free":
        _run("umount", "-l", b.dir)
