"""What the store tells its subscribers after a commit: frozen events, one per change.

The store says what changed in its own terms (spaces, skills, paths inside a skill, file
ids, sessions) and who changed it, never in the kernel's; each subscriber decides what
that means to it. The mount keeps the numbers the kernel knows in step and turns tree
changes into kernel invalidations (`skillfs.invalidate`), the learner wakes for session
changes. A subscriber may return an awaitable: the store waits for it before the change's
caller is answered (the mount does, so a reader that follows sees the change).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class SpaceAdded:
    space_id: str
    name: str
    author: str


@dataclass(frozen=True)
class SpaceRemoved:
    space_id: str
    name: str
    author: str


@dataclass(frozen=True)
class SpaceRenamed:
    space_id: str
    old_name: str
    new_name: str
    author: str


@dataclass(frozen=True)
class SkillAdded:
    """A skill became part of a space (created in it, included, restored)."""

    space_id: str
    skill_id: str
    name: str
    author: str


@dataclass(frozen=True)
class SkillRemoved:
    """A skill left a space (excluded, or deleted everywhere)."""

    space_id: str
    skill_id: str
    name: str
    author: str


@dataclass(frozen=True)
class FileAdded:
    skill_id: str
    path: str
    file_id: int
    author: str


@dataclass(frozen=True)
class FileChanged:
    """New content at the same path (a new version, or the first of a reserved file)."""

    skill_id: str
    path: str
    file_id: int
    author: str


@dataclass(frozen=True)
class FileRemoved:
    skill_id: str
    path: str
    file_id: int
    author: str


@dataclass(frozen=True)
class FileDropped:
    """A reserved file whose first version never committed left the tree: its creator's
    close must be followed by a name that is gone."""

    skill_id: str
    path: str
    file_id: int


@dataclass(frozen=True)
class FileMoved:
    skill_id: str
    old_path: str
    new_path: str
    file_id: int
    author: str


@dataclass(frozen=True)
class FileMovedOver:
    """A file renamed over another (an editor's save). The file that was at `new_path`
    survives: it keeps its id (`survivor_id`) and history and takes the moved file's content
    as a new version. The moved file (`moved_id`) is recorded deleted. To a filesystem the
    moved file now has the name: the mount gives the survivor the moved file's number."""

    skill_id: str
    old_path: str
    new_path: str
    moved_id: int
    survivor_id: int
    author: str


@dataclass(frozen=True)
class FolderAdded:
    skill_id: str
    path: str
    author: str


@dataclass(frozen=True)
class FolderRemoved:
    skill_id: str
    path: str
    author: str


@dataclass(frozen=True)
class FolderMoved:
    skill_id: str
    old_path: str
    new_path: str
    author: str


@dataclass(frozen=True)
class SessionEvent:
    """Something happened to a session: "messages" (`count` new ones), "end", "flush",
    "attached" (to `space_id`) or "session_deleted"."""

    kind: str
    session_id: str
    space_id: str | None = None
    count: int = 0


TreeEvent = (SpaceAdded | SpaceRemoved | SpaceRenamed | SkillAdded | SkillRemoved | FileAdded
             | FileChanged | FileRemoved | FileDropped | FileMoved | FileMovedOver
             | FolderAdded | FolderRemoved | FolderMoved)
StoreEvent = TreeEvent | SessionEvent
Subscriber = Callable[[StoreEvent], Awaitable[None] | None]

__all__ = ["SpaceAdded", "SpaceRemoved", "SpaceRenamed", "SkillAdded", "SkillRemoved",
           "FileAdded", "FileChanged", "FileRemoved", "FileDropped", "FileMoved",
           "FileMovedOver", "FolderAdded", "FolderRemoved", "FolderMoved", "SessionEvent",
           "TreeEvent", "StoreEvent", "Subscriber"]
