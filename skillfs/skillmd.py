"""SKILL.md: YAML front matter (name, description) and a Markdown body."""

from dataclasses import dataclass
from importlib import resources

import frontmatter
import yaml

from .errors import Invalid
from .names import check_skill_name

MAX_DESCRIPTION = 1024
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


def render(name: str, description: str, body: str) -> str:
    head = yaml.safe_dump({"name": name, "description": description}, sort_keys=False,
                          allow_unicode=True, width=10_000)
    return f"---\n{head}---\n\n{body.strip()}\n"


def default_skill(name: str) -> str:
    return resources.files("skillfs").joinpath("defaults", name, "SKILL.md").read_text("utf-8")
