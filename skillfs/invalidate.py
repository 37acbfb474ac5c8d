"""Tells the kernel to drop cached entries and inodes, from a thread of its own.

`invalidate_entry` waits for FUSE requests on the same directory to finish, so calling it
from the trio thread (which serves those requests) could deadlock; a dedicated thread keeps
the loop free. Items are handled in order; a caller that must know the kernel has forgotten
(the API, the spool, the learner) waits for its batch.
"""

from __future__ import annotations

import logging
import queue
import threading

from . import noflush  # noqa: F401  (before pyfuse3)

import pyfuse3  # noqa: E402
import trio

log = logging.getLogger(__name__)


class KernelInvalidator:
    def __init__(self) -> None:
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="skillfs-invalidate",
                                        daemon=True)
        self._token: trio.lowlevel.TrioToken | None = None
        self.enabled = True

    def start(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._thread.start()

    def stop(self) -> None:
        self.enabled = False
        self._queue.put(None)

    async def invalidate(self, items: list[tuple], wait: bool) -> None:
        if not self.enabled or not items:
            return
        if not wait:
            self._queue.put((items, None))
            return
        done = trio.Event()
        self._queue.put((items, done))
        await done.wait()

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            items, done = job
            for item in items:
                if not self.enabled:
                    break
                self._one(item)
            if done is not None:
                try:
                    trio.from_thread.run_sync(done.set, trio_token=self._token)
                except trio.RunFinishedError:
                    return

    @staticmethod
    def _one(item: tuple) -> None:
        kind, ino, arg = item
        try:
            if kind == "inode":
                pyfuse3.invalidate_inode(ino, attr_only=arg)
            else:
                pyfuse3.invalidate_entry(ino, arg.encode("utf-8", "surrogateescape"))
        except (FileNotFoundError, OSError) as e:
            # The kernel never saw this inode or name: nothing to forget.
            if getattr(e, "errno", None) not in (2, None):
                log.debug("invalidate %s: %s", item, e)
