"""What one caller may see and change: every space, or some; read and write, or read only.

A caller's access is the intersection of every limit put on it: the bearer token's scope
(config.TokenScope) on TCP, then what an MCP client asked for (`/mcp?space=S&read_only=1`,
`skillfs mcp --space S --read-only`). Each limit is kept whole rather than merged, because
a token may name a space by id and a client by name: a space is visible when every limit
names it one way or the other. The Unix socket is private to the daemon's user, so a
request on it starts with full access.

The HTTP API's gate (api/scopes.py) and the MCP tools (mcp/tools.py) both ask this one
object, so the two refuse the same things the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# Where a request's Access travels in its ASGI scope.
SCOPE_KEY = "skillfs.access"


@dataclass(frozen=True)
class Access:
    # each a set of space names or ids; a space must be in all of them
    limits: tuple[frozenset[str], ...] = ()
    read_only: bool = False

    @property
    def everywhere(self) -> bool:
        return not self.limits

    @property
    def full(self) -> bool:
        return self.everywhere and not self.read_only

    def sees(self, space: Any) -> bool:
        """Whether the space (a SpaceRow) is within every limit."""
        return all(space.name in names or space.id in names for names in self.limits)

    def narrowed(self, spaces: Iterable[str] = (), read_only: bool = False) -> Access:
        """This access, further limited to `spaces` (none given: no new limit)."""
        wanted = frozenset(spaces)
        limits = (*self.limits, wanted) if wanted else self.limits
        return Access(limits, self.read_only or read_only)

    def describe(self) -> str:
        where = " and ".join("{" + ", ".join(sorted(names)) + "}" for names in self.limits)
        return ", ".join(filter(None, [f"spaces {where}" if where else "",
                                       "read-only" if self.read_only else ""])) or "full"


FULL = Access()
# for a caller whose access cannot be told: no space, no writes
NOTHING = Access((frozenset(),), read_only=True)


def of(scope: dict) -> Access:
    """The access of an ASGI request: what the token check or the MCP endpoint put there,
    else full (the Unix socket)."""
    return scope.get(SCOPE_KEY, FULL)
