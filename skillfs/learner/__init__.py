"""Learning: sessions' messages become tasks, tasks become lessons, lessons become edits of
a space's skill files. `Learner` runs inside the daemon's trio loop and talks only to the
store; the `openai` back end uses a model, the `rules` back end works offline."""

from ..config import LearnerConfig, LLMConfig
from .core import Learner
from .llm import LLMError

__all__ = ["Learner", "LearnerConfig", "LLMConfig", "LLMError"]
