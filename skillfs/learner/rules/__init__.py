"""The offline learner: plain rules, no model, same results every time.

It understands little on purpose and says less rather than guess: `tasks` finds requests and
judges them from every signal (`outcomes`), `facts` keeps what the user states about
themselves filed by subject, `daily` writes the daily-log entries. Everything here is a pure
function of the messages and the files' current text.
"""

from .daily import add_daily_entry, daily_entry, daily_log_name, replace_daily_entry
from .facts import (TOPIC_TITLES, Fact, drop_lines, fact_from_sentence, fact_key,
                    facts_from_sentence, merge_facts, topic_of)
from .tasks import RuleTask, analyze, answered, classify_user, describe
from .text import sentences

__all__ = [
    "TOPIC_TITLES", "Fact", "RuleTask", "add_daily_entry", "analyze", "answered", "classify_user",
    "daily_entry", "daily_log_name", "describe", "drop_lines", "fact_from_sentence", "fact_key",
    "facts_from_sentence", "merge_facts", "replace_daily_entry", "sentences", "topic_of",
]
