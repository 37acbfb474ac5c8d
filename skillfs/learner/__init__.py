"""Learning: sessions' messages become tasks, tasks become lessons, lessons become edits of
a space's skill files. `Learner` runs inside the daemon's trio loop and talks only to the
store; the `openai` back end uses a model, the `rules` back end works offline."""

from .core import Learner, LearnerConfig, choose_backend
from .llm import LLMConfig, LLMError

__all__ = ["Learner", "LearnerConfig", "choose_backend", "LLMConfig", "LLMError"]
