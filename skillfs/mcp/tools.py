"""The MCP tools: list, get, read, search and glob a space's skills; unless read-only,
write a file, store a session's messages and flush it.

Every tool works through the store's services, as the HTTP API does, and within the
caller's access (access.py): a space outside it is "not found", the same answer as a space
that does not exist, and a write under read-only access is refused. The write tools are
also left out of a read-only caller's tool list. A skillfs error becomes a tool error with
its message; the SDK turns bad arguments (the input schema) and anything unexpected into a
tool error too, so no call can take the server down.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, cast

from mcp.server.context import CallNext, ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import Field

from .. import access as accessmod
from ..access import Access
from ..errors import Forbidden, Invalid, NotFound, SkillfsError
from ..messages import normalize
from ..search import glob as glob_files
from ..search import search as search_files
from ..store import Store
from ..store.rows import SKILL_MD

INSTRUCTIONS = ("Long-term memory as skill files: learning spaces hold skills; a skill is a "
                "folder with a SKILL.md (its rules) and Markdown files. Read a skill's "
                "SKILL.md (get_skill) before its other files.")
WRITE_TOOLS = frozenset({"write_file", "store_messages", "flush_session"})
AUTHOR = "api"
SEARCH_SECONDS = 5.0
GLOB_RESULTS = 1000

SpaceArg = Annotated[str | None, Field(
    description="The learning space (name or id); may be left out when only one space is "
                "visible")]
SkillArg = Annotated[str, Field(description="The skill's name (its folder), e.g. daily-logs")]
PathArg = Annotated[str, Field(description="A path inside the skill, e.g. SKILL.md or "
                                           "notes/2026-11-21.md")]
SessionArg = Annotated[str, Field(description="The session: its id, or a name of your choice "
                                              "(the session is made in the space on first use)")]

_READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
_WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)


def access_of(request: Any) -> Access:
    """The calling request's access: what the /mcp endpoint worked out for it; none at all
    for a call that came with no HTTP request (it would have to be a new transport)."""
    scope = getattr(request, "scope", None)
    return accessmod.of(scope) if scope is not None else accessmod.NOTHING


class Tools:
    """The tools' work, given the store and the caller's access."""

    def __init__(self, store: Store, access: Access):
        self.store = store
        self.access = access

    @classmethod
    def of(cls, ctx: Context) -> Tools:
        return cls(cast(Store, ctx.request_context.lifespan_context),
                   access_of(ctx.request_context.request))

    def space(self, ref: str | None):
        visible = [s for s in self.store.list_spaces() if self.access.sees(s)]
        if ref is None:
            if len(visible) == 1:
                return visible[0]
            raise Invalid(f"name the space: {len(visible)} spaces are visible "
                          "(list_spaces shows them)")
        found = next((s for s in visible if ref in (s.name, s.id)), None)
        if found is None:
            raise NotFound(f"no space {ref!r}")
        return found

    def scope(self, ref: str | None) -> list[str] | None:
        """The spaces (ids) a search covers: the one named, else every visible one (None:
        all, skills in no space too, for full access)."""
        if ref is not None:
            return [self.space(ref).id]
        if self.access.everywhere:
            return None
        return [s.id for s in self.store.list_spaces() if self.access.sees(s)]

    def skill(self, space, name: str):
        skill_id = space.skills.get(name)
        if skill_id is None:
            raise NotFound(f"no skill {name!r} in space {space.name!r}")
        return self.store.get_skill(skill_id)

    def writable(self) -> None:
        if self.access.read_only:
            raise Forbidden("this MCP server is read-only")

    async def session_in(self, space, ref: str, create: bool) -> str:
        """A session of the space by id or name; made (named `ref`) when `create` and none
        is. A ref shaped like an id names no new session: the answer is then the same
        whether another space has that session or not."""
        found = [s for s in await self.store.list_sessions(space_id=space.id)
                 if ref in (s.id, s.name)]
        if found:
            return found[0].id
        if not create:
            raise NotFound(f"no session {ref!r} in space {space.name!r}")
        if _looks_like_id(ref):
            raise Invalid(f"no session {ref!r} in space {space.name!r}; name a new session "
                          "with a name that is not an id")
        return (await self.store.create_session(space_id=space.id, name=ref)).id


def _looks_like_id(ref: str) -> bool:
    try:
        uuid.UUID(ref)
    except ValueError:
        return False
    return True


def _space_json(space) -> dict[str, Any]:
    return {"name": space.name, "id": space.id, "skills": sorted(space.skills)}


def _skill_json(skill) -> dict[str, Any]:
    return {"name": skill.name, "description": skill.description,
            "files": [{"path": p, "size": f.size, "version": f.version}
                      for p, f in sorted(skill.files.items())]}


def _text(content: bytes, path: str) -> str:
    try:
        return content.decode()
    except UnicodeDecodeError:
        raise Invalid(f"{path} is not UTF-8 text; read it through the mount or the API") \
            from None


TOOLS: list[tuple[Callable[..., Awaitable[Any]], ToolAnnotations]] = []


def _tool(annotations: ToolAnnotations):
    """Registers a tool; a skillfs error it raises is the caller's answer (a tool error with
    its message), not a failure of the server."""
    def register(fn):
        @functools.wraps(fn)
        async def answered(*args, **kwargs):
            try:
                return await fn(*args, **kwargs)
            except SkillfsError as e:
                raise ToolError(e.message) from None
        TOOLS.append((answered, annotations))
        return answered
    return register


async def _hide_writes(ctx: ServerRequestContext[Any, Any], call_next: CallNext):
    """A read-only caller is not offered the write tools."""
    result = await call_next(ctx)
    # the chain's result is the wire form by now: a dict
    if ctx.method == "tools/list" and isinstance(result, dict) and \
            access_of(ctx.request).read_only:
        result = {**result, "tools": [t for t in result.get("tools", [])
                                      if t.get("name") not in WRITE_TOOLS]}
    return result


# -- the tools --------------------------------------------------------------------------


@_tool(_READ)
async def list_spaces(ctx: Context) -> dict[str, Any]:
    """The learning spaces you can see, with the names of their skills."""
    t = Tools.of(ctx)
    return {"spaces": [_space_json(s) for s in sorted(t.store.list_spaces(),
                                                      key=lambda s: s.name)
                       if t.access.sees(s)]}


@_tool(_READ)
async def list_skills(ctx: Context, space: SpaceArg = None) -> dict[str, Any]:
    """The skills of a space: name, description and files of each."""
    t = Tools.of(ctx)
    found = t.space(space)
    return {"space": found.name,
            "skills": [_skill_json(s) for s in t.store.list_space_skills(found.id)]}


@_tool(_READ)
async def get_skill(ctx: Context, skill: SkillArg, space: SpaceArg = None) -> dict[str, Any]:
    """A skill's SKILL.md (its rules: read them before using or changing the skill) and
    the index of its files."""
    t = Tools.of(ctx)
    found = t.skill(t.space(space), skill)
    content = await t.store.read_file(found.id, SKILL_MD)
    return {**_skill_json(found), "skill_md": _text(content.content, SKILL_MD)}


@_tool(_READ)
async def read_file(ctx: Context, skill: SkillArg, path: PathArg,
                    space: SpaceArg = None) -> dict[str, Any]:
    """The current content of a file of a skill, with its version (pass it to write_file
    as expect_version to refuse a write over someone else's change)."""
    t = Tools.of(ctx)
    found = t.skill(t.space(space), skill)
    content = await t.store.read_file(found.id, path)
    return {"path": path, "version": content.version,
            "content": _text(content.content, path)}


@_tool(_READ)
async def search(ctx: Context,
                 pattern: Annotated[str, Field(description="A regular expression (RE2 "
                                               "syntax), or plain text with fixed=true")],
                 space: Annotated[str | None, Field(description="Only this space (name "
                                                    "or id); default: every visible "
                                                    "space")] = None,
                 skill: Annotated[str | None, Field(description="Only this skill")] = None,
                 glob: Annotated[str | None, Field(description="Only files whose path "
                                                   "in the space matches, e.g. "
                                                   "'daily-logs/*.md' or '*.md'")] = None,
                 fixed: Annotated[bool, Field(description="The pattern is plain "
                                              "text")] = False,
                 ignore_case: Annotated[bool, Field(description="Match upper and lower "
                                                    "case alike")] = False,
                 max_results: Annotated[int, Field(ge=1, le=1000, description="At most this "
                                                   "many matching lines")] = 100,
                 ) -> dict[str, Any]:
    """Lines of the current files that match, like `grep -rn`: each match has the file
    (space/skill/path, as under the mount), the line number and the line. A search stops after
    max_results lines (truncated) or 5 seconds (timed_out)."""
    t = Tools.of(ctx)
    found = await search_files(t.store, pattern, spaces=t.scope(space), skill=skill,
                               glob=glob, fixed=fixed, ignore_case=ignore_case,
                               max_results=max_results, timeout=SEARCH_SECONDS)
    return found.as_json()  # the control API's shape


@_tool(_READ)
async def glob(ctx: Context,
               pattern: Annotated[str, Field(description="A glob over paths in a space "
                                             "(skill/file): '*' and '?' within a name, "
                                             "'**' across folders, '{a,b}'; a glob "
                                             "without '/' matches names at any depth")],
               space: Annotated[str | None, Field(description="Only this space (name or "
                                                  "id); default: every visible "
                                                  "space")] = None,
               skill: Annotated[str | None, Field(description="Only this skill")] = None,
               ) -> dict[str, Any]:
    """Paths (space/skill/file) of the current files that match a glob."""
    t = Tools.of(ctx)
    paths = await glob_files(t.store, pattern, spaces=t.scope(space), skill=skill,
                             max_results=GLOB_RESULTS + 1)
    return {"paths": paths[:GLOB_RESULTS], "truncated": len(paths) > GLOB_RESULTS}


@_tool(_WRITE)
async def write_file(ctx: Context, skill: SkillArg, path: PathArg,
                     content: Annotated[str, Field(description="The file's whole new "
                                                   "content (UTF-8 text)")],
                     space: SpaceArg = None,
                     expect_version: Annotated[int | None, Field(
                         ge=0, description="Refuse the write unless the file is still "
                         "this version (0: unless it does not exist yet)")] = None,
                     ) -> dict[str, Any]:
    """Create or replace a file of a skill; every write is a new version (history is
    kept). Writing SKILL.md of a skill the space does not have creates the skill."""
    t = Tools.of(ctx)
    t.writable()
    found = t.space(space)
    data = content.encode()
    if path == SKILL_MD and skill not in found.skills:
        made = await t.store.create_skill(content, space_id=found.id, author=AUTHOR,
                                          reason="MCP write_file")
        if made.name != skill:
            raise Invalid(f"SKILL.md names the skill {made.name!r}, not {skill!r}")
        return {"path": path, "version": made.files[SKILL_MD].version,
                "size": len(data), "created_skill": made.name}
    row = await t.store.write_file(t.skill(found, skill).id, path, data,
                                   author=AUTHOR, reason="MCP write_file",
                                   expect_version=expect_version)
    return {"path": path, "version": row.version, "size": row.size}


@_tool(_WRITE)
async def store_messages(ctx: Context, session: SessionArg,
                         messages: Annotated[list[dict[str, Any]], Field(
                             min_length=1, max_length=1000,
                             description="Messages in OpenAI chat form ({role, content, "
                             "tool_calls…}), Anthropic form (content blocks) or "
                             "Acontext's form")],
                         space: SpaceArg = None) -> dict[str, Any]:
    """Store messages of a session that learns into the space; the learner turns finished
    tasks into skill edits (flush_session asks it to start now)."""
    t = Tools.of(ctx)
    t.writable()
    found = t.space(space)
    parsed = []
    for i, message in enumerate(messages):
        try:
            parsed.append(normalize(message))
        except Invalid as e:
            raise Invalid(f"messages[{i}]: {e.message}") from None
    session_id = await t.session_in(found, session, create=True)
    seqs = await t.store.add_messages(session_id, parsed, author=AUTHOR)
    return {"session_id": session_id, "space": found.name, "stored": len(seqs)}


@_tool(_WRITE)
async def flush_session(ctx: Context, session: SessionArg,
                        space: SpaceArg = None) -> dict[str, Any]:
    """Ask the learner to learn from a session's messages now rather than when it has
    buffered enough or the session went quiet."""
    t = Tools.of(ctx)
    t.writable()
    session_id = await t.session_in(t.space(space), session, create=False)
    await t.store.mark_session(session_id, "flush")
    return {"session_id": session_id, "flushed": True}


def build_server(store: Store) -> MCPServer:
    """The MCP server over the daemon's store (handed to the tools as the SDK's lifespan
    state)."""
    @asynccontextmanager
    async def lifespan(_server: MCPServer) -> AsyncIterator[Store]:
        yield store

    server: MCPServer = MCPServer("skillfs", instructions=INSTRUCTIONS,
                                  middleware=[_hide_writes], lifespan=lifespan)
    for fn, hints in TOOLS:
        server.add_tool(fn, annotations=hints)
    return server
