"""Last-in-first-out undo stack: mounts, processes and temp dirs of a run.

Run on normal exit, on exceptions, on Ctrl-C and on SIGTERM/SIGHUP, so that
an interrupted benchmark leaves no FUSE mount behind.
"""

from __future__ import annotations

import signal
import sys
import traceback

_stack: list = []


def push(fn) -> None:
    _stack.append(fn)


def discard(fn) -> None:
    # Bound methods compare equal but are new objects each time: match by ==.
    for i in range(len(_stack) - 1, -1, -1):
        if _stack[i] == fn:
            del _stack[i]
            return


def run_all() -> None:
    # A second Ctrl-C must not cut the unmounting short.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    while _stack:
        fn = _stack.pop()
        try:
            fn()
        except Exception:
            traceback.print_exc(file=sys.stderr)


def _on_signal(signum, frame):
    # Becomes an exception in the main thread, so finally-blocks unwind.
    print(f"\nbench: {signal.Signals(signum).name}; unmounting", file=sys.stderr)
    raise SystemExit(128 + signum)


def install_signal_handlers() -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    # Started in the background by a shell, Python inherits SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
