"""SKILL.md: YAML front matter (name, description) and a Markdown body.

`parse` is what the mount and the API accept from people: a valid name and description, any
other keys kept (Claude Code reads keys of its own, such as ``disable-model-invocation``).
`parse_agent_skill` is what skillfs itself writes: the Agent Skills format as agentskills.io
and Anthropic's skill docs state it, so that every client that loads skills takes the file —
only the specification's keys, no angle brackets (the front matter goes into the model's
system prompt), no reserved words in the name, a short `compatibility`, `metadata` a map of
strings.
"""

from dataclasses import dataclass
from importlib import resources

import frontmatter
import yaml

from .errors import Invalid
from .names import check_skill_name

MAX_DESCRIPTION = 1024
MAX_COMPATIBILITY = 500
AGENT_SKILL_KEYS = ("name", "description", "license", "compatibility", "metadata",
                    "allowed-tools")
RESERVED_WORDS = ("anthropic", "claude")
DEFAULT_SKILLS = ("daily-logs", "user-general-facts")


@dataclass(frozen=True)
class SkillMd:
    name: str
    description: str
    body: str
    meta: dict


def parse(content: bytes | str, folder: str | None = None) -> SkillMd:
    """Parse and validate a SKILL.md; raise Invalid with the reason."""
    if isinstance(content, bytes):
        try:
            content = content.decode("utf-8")
        except UnicodeDecodeError:
            raise Invalid("SKILL.md is not valid UTF-8") from None
    if not content.lstrip("\ufeff").startswith("---"):
        raise Invalid("SKILL.md must start with YAML front matter ('---')")
    try:
        post = frontmatter.loads(content)
    except (yaml.YAMLError, ValueError) as e:
        raise Invalid(f"SKILL.md front matter is not valid YAML: {e}") from None
    meta = dict(post.metadata)
    name = meta.get("name")
    desc = meta.get("description")
    if not isinstance(name, str) or not name:
        raise Invalid("SKILL.md front matter needs a 'name'")
    if not isinstance(desc, str) or not desc.strip():
        raise Invalid("SKILL.md front matter needs a 'description'")
    check_skill_name(name)
    if len(desc) > MAX_DESCRIPTION:
        raise Invalid(f"SKILL.md description is longer than {MAX_DESCRIPTION} characters")
    if folder is not None and name != folder:
        raise Invalid(f"SKILL.md name {name!r} must equal its folder {folder!r}")
    return SkillMd(name=name, description=desc.strip(), body=post.content, meta=meta)


def parse_agent_skill(content: bytes | str, folder: str | None = None) -> SkillMd:
    """`parse`, then the Agent Skills format's own rules; raise Invalid with the first broken."""
    parsed = parse(content, folder)
    meta = parsed.meta
    stray = [str(k) for k in meta if k not in AGENT_SKILL_KEYS]
    if stray:
        raise Invalid(f"SKILL.md front matter may hold only {', '.join(AGENT_SKILL_KEYS)}; "
                      f"not {', '.join(stray)}")
    for word in RESERVED_WORDS:
        if word in parsed.name:
            raise Invalid(f"skill name {parsed.name!r} holds the reserved word {word!r}")
    for key in ("license", "compatibility", "allowed-tools"):
        if key in meta and not isinstance(meta[key], str):
            raise Invalid(f"SKILL.md {key} must be a string")
    if len(meta.get("compatibility", "")) > MAX_COMPATIBILITY:
        raise Invalid(f"SKILL.md compatibility is longer than {MAX_COMPATIBILITY} characters")
    metadata = meta.get("metadata", {})
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise Invalid("SKILL.md metadata must map strings to strings")
    for key in ("name", "description"):
        if "<" in meta[key] or ">" in meta[key]:
            raise Invalid(f"SKILL.md {key} may not hold '<' or '>' (XML tags)")
    return parsed


def render(name: str, description: str, body: str) -> str:
    head = yaml.safe_dump({"name": name, "description": description}, sort_keys=False,
                          allow_unicode=True, width=10_000)
    return f"---\n{head}---\n\n{body.strip()}\n"


def default_skill(name: str) -> str:
    return resources.files("skillfs").joinpath("defaults", name, "SKILL.md").read_text("utf-8")
