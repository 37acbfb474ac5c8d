"""The learner: buffers sessions, runs extraction and distillation, and one skill writer at a
time per space. It knows the store and nothing else (no mount, no HTTP).

Status of a session, derived from what is in flight for it and published to the store:
pending → extracting → distilling → queued → writing → completed, or failed with the error.

Daemons sharing one database (PostgreSQL) learn together through claims (store/claims.py):
a run of extraction and distillation holds its session's claim and starts from what is
committed (how far the messages are learned, which tasks have lessons waiting), so a task
becomes lessons once whichever daemon runs it. A space's writer holds the space's claim and
keeps it while the daemon lives; a daemon that cannot take it leaves its lessons, kept in
the store, to the holder and looks again every `POLL_SECONDS`. The holder takes over the
lessons other daemons kept, and any daemon takes over a space or session whose daemon died
(its claims end with its connection). Before a batch is written its lessons are read again:
one written meanwhile is not written twice.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import trio

from ..config import LearnerConfig
from ..errors import NotFound, SkillfsError
from ..messages import message_time
from ..store.claims import Claims, LocalClaims
from ..store.events import SessionEvent, StoreEvent
from ..store.rows import now_ns
from . import known, rules
from .distill import Lesson, distill_task
from .extract import Task, extract_tasks
from .llm import LLM
from .usage import Meter, Usage
from .view import Msg, drop_forgotten, from_stored, redacted
from .writer import ClaimLost, write_with_agent, write_with_rules

log = logging.getLogger("skillfs.learner")

TERMINAL = ("completed", "failed")
# how often a daemon sharing its database looks for work other daemons left or kept for it
POLL_SECONDS = 1.0
# a session whose learning has not moved for this long may have lost its daemon
ADOPT_AFTER_SECONDS = 30.0


@dataclass
class _Session:
    id: str
    space_id: str | None = None
    loaded: bool = False
    learned_seq: int = -1
    stored_seq: int = -1  # its last message as committed, by whichever daemon
    last_activity: float = 0.0
    not_before: float = 0.0  # another daemon was learning it: try again from then
    final: bool = False  # end or flush asked for and not yet handled
    ended: bool = False
    retry: bool = False
    busy: bool = False
    phase: str = ""
    queued: int = 0
    writing: int = 0
    error: str | None = None
    # task ids handed to the writer (queued, being written, or failed and kept for a retry)
    inflight: set[str] = field(default_factory=set)
    failed_lessons: list[Lesson] = field(default_factory=list)
    published: str | None = None
    lock: trio.Lock = field(default_factory=trio.Lock)
    # what learning it cost since the daemon started
    meter: Meter = field(default_factory=Meter)


@dataclass
class _Space:
    queue: list[Lesson] = field(default_factory=list)
    running: bool = False
    # lessons queued or being written here: a lesson kept by a run and taken over from the
    # store as well is written once
    ids: set[str] = field(default_factory=set)


def _now() -> float:
    try:
        return trio.current_time()
    except RuntimeError:  # called outside the trio loop
        return 0.0


def task_time(last: Msg | None, original_date: str | None, now: datetime) -> datetime:
    """When a task happened: its last message's own timestamp, else the session's
    `original_date` (a bare date keeps the arrival's time of day), else when it arrived."""
    if last is not None and last.stamped and last.at is not None:
        return last.at
    arrived = last.at if last is not None and last.at is not None else now
    if original_date:
        day = message_time({"timestamp": original_date})
        if day is not None:
            if len(original_date.strip()) <= 10:  # a date without a time
                return arrived.replace(year=day.year, month=day.month, day=day.day)
            return day
    return arrived


def _last_learned(tasks: list[Task], taken: set[str]) -> Task | None:
    """The session's last task whose entry is written: a reaction may still judge it."""
    done = [t for t in tasks if t.learned and t.first_seq is not None]
    last = max(done, key=lambda t: t.first_seq or 0, default=None)  # each first_seq is set
    return last if last is not None and last.id not in taken else None


def _judged_again(stored: Task, found: rules.RuleTask) -> bool:
    """A reaction after the written entry changed the task's outcome."""
    return (found.finished and found.status != stored.status
            and stored.last_seq is not None and found.last_seq > stored.last_seq)


def _kind(rt: rules.RuleTask) -> str:
    return "success" if rt.status == "success" else "failure"


class Learner:
    """Call `run` in the daemon's nursery and feed it the store's events:
    `store.subscribe(learner.on_store_event)`."""

    def __init__(self, store: Any, config: LearnerConfig | None = None):
        self.store = store
        self.config = config or LearnerConfig()
        self.backend = self.config.chosen_backend()
        self.llm: LLM | None = LLM(self.config) if self.backend == "openai" else None
        self._sessions: dict[str, _Session] = {}
        self._spaces: dict[str, _Space] = {}
        self._wake = trio.Event()
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._limit = trio.CapacityLimiter(max(1, self.config.parallel_sessions))
        self._claims: Claims = LocalClaims()

    # -- public ------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self.backend != "off"

    def notify(self, session_id: str, event: str) -> None:
        """Something happened to a session: "messages", "end", "flush", "attached" or
        "session_deleted". Call on the trio thread. Repeated calls are harmless."""
        if not self.enabled:
            return
        if event == "session_deleted":
            self._sessions.pop(session_id, None)
            self._kick()
            return
        s = self._session(session_id)
        s.last_activity = _now()
        if event in ("end", "flush"):
            s.final = True
            s.ended = s.ended or event == "end"
        if event in ("messages", "end", "flush") and s.error is not None:
            # new input is a new chance: learn it together with what failed before
            self._clear_failure(s)
        self._kick()

    async def retry(self, session_id: str) -> None:
        """Learn a failed session again from its stored messages."""
        if not self.enabled:
            return
        s = self._session(session_id)
        row = await self.store.get_learning(session_id)
        if row is None:
            raise NotFound(f"session {session_id} does not learn into any space")
        self._clear_failure(s)
        s.retry = True
        s.final = s.final or s.ended
        await self._publish(s)
        self._kick()

    def usage(self, session_id: str) -> dict | None:
        """Model calls and tokens spent on the session since the daemon started, by stage,
        with the tasks learned (None: nothing learned yet)."""
        s = self._sessions.get(session_id)
        if s is None or not (s.meter.stages or s.meter.tasks):
            return None
        return s.meter.json()

    def usage_total(self) -> dict:
        """The same, over every session this daemon has learned."""
        total = Meter()
        for s in self._sessions.values():
            total.tasks += s.meter.tasks
            for name, u in s.meter.stages.items():
                total.stage(name).add(u.calls, u.input_tokens, u.output_tokens, u.counted)
        return total.json()

    def status(self, session_id: str) -> str | None:
        """The session's status as the learner sees it now (None: not known yet)."""
        s = self._sessions.get(session_id)
        return self._status(s) if s is not None and s.loaded else None

    async def wait(self, session_id: str, timeout: float | None = None) -> str:
        """Wait until the session's learning is completed or failed (everything it has sent
        so far is written), or until `timeout`; return the status."""
        deadline = trio.current_time() + (timeout if timeout is not None else math.inf)
        with trio.move_on_at(deadline):
            while True:
                st = await self._current(session_id)
                if st in TERMINAL:
                    return st
                changed = self._changed
                # status changes wake us; the timeout re-checks sessions we do not track
                with trio.move_on_after(1.0):
                    await changed.wait()
        return await self._current(session_id) or "pending"

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The scheduler; runs until cancelled (inside the daemon's nursery)."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self.enabled:
                    self._claims = self.store.learning.claims()
                    await self._recover()
                task_status.started()
                if not self.enabled:
                    await trio.sleep_forever()
                if self._claims.shared:
                    nursery.start_soon(self._take_over)
                await self._schedule()
        finally:
            self._nursery = None
            with trio.CancelScope(shield=True):
                await self._claims.close()
                if self.llm is not None:
                    await self.llm.aclose()

    # -- state -------------------------------------------------------------------------

    def on_store_event(self, event: StoreEvent) -> None:
        """A store subscriber: sessions' events wake it; the tree's are not its business."""
        if isinstance(event, SessionEvent):
            self.notify(event.session_id, event.kind)

    def _session(self, session_id: str) -> _Session:
        s = self._sessions.get(session_id)
        if s is None:
            s = self._sessions[session_id] = _Session(session_id, last_activity=_now())
        return s

    def _kick(self) -> None:
        self._wake.set()

    def _clear_failure(self, s: _Session) -> None:
        s.error = None
        if s.failed_lessons:
            lessons, s.failed_lessons = s.failed_lessons, []
            self._enqueue(s, lessons)

    def _last_seq(self, s: _Session) -> int:
        return max(self.store.last_seq(s.id), s.stored_seq)

    def _pending_messages(self, s: _Session) -> int:
        return max(0, self._last_seq(s) - s.learned_seq)

    def _status(self, s: _Session) -> str:
        if s.error is not None:
            return "failed"
        if s.busy:
            return s.phase or "extracting"
        if s.writing:
            return "writing"
        if s.queued:
            return "queued"
        if self._pending_messages(s) or s.final or s.retry:
            return "pending"
        if self._last_seq(s) < 0 and not s.ended:
            return "pending"  # attached, nothing said yet
        return "completed"

    async def _current(self, session_id: str) -> str | None:
        s = self._sessions.get(session_id)
        if s is not None and s.loaded:
            st = self._status(s)
            # report terminal only once the store says so too (what API readers see)
            return st if st not in TERMINAL or s.published == st else "pending"
        row = await self.store.get_learning(session_id)
        return row.status if row is not None else None

    async def _publish(self, s: _Session) -> None:
        async with s.lock:
            st = self._status(s)
            if st == s.published and st != "failed":
                return
            try:
                await self.store.set_learning(s.id, st, s.error if st == "failed" else None)
            except NotFound:
                return
            except SkillfsError as e:
                # The database cannot take it now (full disk, being reopened): published
                # again by the session's next step.
                log.warning("cannot record the learning status of %s: %s", s.id, e)
                return
            s.published = st
        old, self._changed = self._changed, trio.Event()
        old.set()

    def _publish_soon(self, s: _Session) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(self._publish, s)

    async def _load(self, s: _Session) -> None:
        row = await self.store.get_learning(s.id)
        if row is None:
            return  # not attached to a space yet; the "attached" event brings us back
        s.space_id = row.space_id
        s.learned_seq = row.learned_seq
        s.stored_seq = await self.store.learning.stored_last_seq(s.id)
        if row.status == "failed" and s.error is None and not s.retry and not s.loaded:
            s.error = row.error or "failed"
        try:
            session = await self.store.get_session(s.id)
            s.ended = s.ended or session.ended
        except NotFound:
            self._sessions.pop(s.id, None)
            return
        s.published = row.status
        s.loaded = True

    async def _recover(self) -> None:
        """After a start: pick up sessions whose learning was not finished."""
        for row in await self.store.list_learning():
            behind = self.store.last_seq(row.session_id) > row.learned_seq
            if row.status == "completed" and not behind:
                continue
            s = self._session(row.session_id)
            if row.status != "failed":
                s.retry = True  # a crash mid-way: finish what was started
            await self._load(s)
            if s.loaded and s.ended:
                s.final = True
        for s in list(self._sessions.values()):
            if not s.loaded:
                await self._load(s)
        await self._recover_lessons()

    async def _recover_lessons(self) -> None:
        """Lessons kept in the store but not written when the daemon stopped are written now
        (never distilled again, so each is written once). A failed session's failed lessons
        wait for its retry, as they did before."""
        await self._adopt(await self.store.unwritten_lessons())

    async def _adopt(self, lesson_rows: list[Any]) -> None:
        """Lessons from the store into their spaces' queues (those not there already)."""
        by_session: dict[str, list[Any]] = {}
        for row in lesson_rows:
            by_session.setdefault(row.session_id, []).append(row)
        for sid, rows in by_session.items():
            s = self._session(sid)
            if not s.loaded:
                await self._load(s)
            if not s.loaded or s.space_id is None:
                continue
            queued: list[Lesson] = []
            for row in rows:
                try:
                    lesson = Lesson.from_payload(row.id, row.session_id, row.task_id, row.payload)
                except Exception as e:
                    log.error("lesson %s of session %s cannot be read: %s", row.id, sid, e)
                    await self.store.mark_lessons([row.id], "failed", f"unreadable lesson: {e}")
                    continue
                if row.status == "failed" and s.error is not None:
                    s.failed_lessons.append(lesson)
                    if lesson.task_id:
                        s.inflight.add(lesson.task_id)
                else:
                    queued.append(lesson)
            if queued:
                log.info("session %s: %d lesson(s) not written before the stop; writing them",
                         sid, len(queued))
                self._enqueue(s, queued)

    # -- scheduling --------------------------------------------------------------------

    def _due(self, s: _Session, now: float) -> bool:
        if s.busy or s.error is not None or not s.loaded or s.space_id is None:
            return False
        if now < s.not_before:
            return False
        if s.retry or s.final:
            return True
        n = self._pending_messages(s)
        if n >= self.config.buffer_messages:
            return True
        return n > 0 and now - s.last_activity >= self.config.idle_seconds

    async def _schedule(self) -> None:
        assert self._nursery is not None
        while True:
            self._wake = trio.Event()
            now = trio.current_time()
            deadline = math.inf
            for s in list(self._sessions.values()):
                if not s.loaded and not s.busy:
                    s.busy = True
                    self._nursery.start_soon(self._load_then_kick, s)
                    continue
                if self._due(s, now):
                    s.busy = True
                    s.phase = "extracting"
                    self._nursery.start_soon(self._process, s)
                elif now < s.not_before:
                    deadline = min(deadline, s.not_before)
                elif s.loaded and not s.busy and self._pending_messages(s) and s.error is None:
                    deadline = min(deadline, s.last_activity + self.config.idle_seconds)
                if s.loaded and not s.busy and self._status(s) != s.published:
                    self._nursery.start_soon(self._publish, s)
            with trio.move_on_at(deadline):
                await self._wake.wait()

    async def _load_then_kick(self, s: _Session) -> None:
        try:
            await self._load(s)
        except Exception:
            log.exception("cannot load learning state of %s", s.id)
        finally:
            s.busy = False
            if not s.loaded:
                # not attached (yet): forget it until an event brings it back
                self._sessions.pop(s.id, None)
            self._kick()

    # -- one session: extract and distill ------------------------------------------------

    async def _process(self, s: _Session) -> None:
        """One run over the session, under its claim."""
        try:
            claimed = await self._claims.take("session", s.id)
        except BaseException:
            s.busy, s.phase = False, ""
            raise
        if not claimed:
            # another daemon is learning it now; what it leaves, a later run takes
            s.busy, s.phase = False, ""
            s.not_before = _now() + POLL_SECONDS
            self._kick()
            return
        try:
            await self._run_claimed(s)
        finally:
            with trio.CancelScope(shield=True):
                await self._claims.release("session", s.id)

    async def _refresh(self, s: _Session) -> None:
        """What other daemons committed for the session since it was loaded."""
        row = await self.store.get_learning(s.id)
        if row is not None:
            s.learned_seq = max(s.learned_seq, row.learned_seq)
        s.stored_seq = await self.store.learning.stored_last_seq(s.id)

    async def _taken(self, s: _Session) -> set[str]:
        """Tasks whose lessons wait for a writer, here or on another daemon: not learned
        again."""
        waiting = await self.store.unwritten_lessons(session_id=s.id)
        return set(s.inflight) | {row.task_id for row in waiting if row.task_id}

    async def _run_claimed(self, s: _Session) -> None:
        final, s.final = s.final or s.ended, False
        s.retry = False
        # lessons kept in the store by this run, in order
        kept: list[Lesson] = []
        stopped = False
        try:
            try:
                async with self._limit:
                    await self._refresh(s)
                    await self._publish(s)
                    if self.backend == "rules":
                        await self._learn_rules(s, final, kept)
                    else:
                        await self._learn_llm(s, final, kept)
            except trio.Cancelled:
                stopped = True
                raise
            except Exception as e:
                log.warning("learning session %s failed: %s", s.id, e, exc_info=True)
                s.error = f"{s.phase or 'learning'} failed: {e}"
            # what was kept is written even when a later step failed: it is not learned again
            if kept:
                self._enqueue(s, kept)
        finally:
            s.busy = False
            s.phase = ""
            # Stopped half way (the daemon is shutting down): the stored status stays the
            # phase it was in, so the next start finishes the work; published now, it could
            # read "completed" with finished tasks not yet distilled.
            if not stopped:
                with trio.CancelScope(shield=True):
                    await self._publish(s)
            self._kick()

    async def _phase(self, s: _Session, phase: str) -> None:
        s.phase = phase
        await self._publish(s)

    async def _tasks(self, s: _Session) -> list[Task]:
        return [Task(r.id, r.ord, r.description, r.status, list(r.progress),
                     list(r.preferences), r.first_seq, r.last_seq, r.learned)
                for r in await self.store.list_tasks(s.id)]

    async def _keep(self, s: _Session, kept: list[Lesson], lessons: list[Lesson],
                    tasks: list[Task] | None = None, high: int | None = None) -> None:
        """Store new lessons, the tasks that changed and how far the messages are learned
        (`high`), in one transaction, before the writer is given the lessons: from then on
        a crash loses none of them and repeats none of this work."""
        from ..store import LessonRow, TaskRow
        dirty = [t for t in tasks or [] if t.dirty]
        advance = high is not None and high > s.learned_seq
        if not lessons and not dirty and not advance:
            return
        assert s.space_id is not None
        await self.store.save_lessons(
            s.id, [LessonRow(lesson.id, s.id, s.space_id, lesson.task_id, lesson.payload())
                   for lesson in lessons],
            tasks=[TaskRow(t.id, s.id, t.ord, t.description, t.status, t.progress,
                           t.preferences, t.first_seq, t.last_seq, t.learned) for t in dirty],
            learned_seq=high if advance else None)
        for t in dirty:
            t.dirty = False
        s.meter.tasks += sum(1 for lesson in lessons if lesson.task_id)
        if advance:
            assert high is not None
            s.learned_seq = high
        kept.extend(lessons)

    async def _messages(self, s: _Session, after: int, upto: int | None = None) -> list[Msg]:
        """The messages to learn from: what users asked to forget is dropped (a request
        later in the session may point back), and secrets are redacted when configured."""
        rows = await self.store.get_messages(s.id, after_seq=after)
        msgs = drop_forgotten([from_stored(r) for r in rows])
        msgs = [m for m in msgs if upto is None or m.seq <= upto]
        if self.config.redact_input and self.llm is not None:
            # milliseconds a message: not on the loop that serves the mount
            msgs = await trio.to_thread.run_sync(lambda: [redacted(m) for m in msgs])
        return msgs

    async def _learn_rules(self, s: _Session, final: bool, kept: list[Lesson]) -> None:
        await self._phase(s, "extracting")
        # taken before the tasks are read: a task written since is learned in what is read
        taken = await self._taken(s)
        tasks = await self._tasks(s)
        high = self._last_seq(s)
        # re-read from the start of the oldest task still open (its outcome may be known
        # now), or of the last task written (a reaction to it may have come)
        open_starts = [t.first_seq for t in tasks
                       if not t.learned and t.first_seq is not None and t.id not in taken]
        last = _last_learned(tasks, taken)
        start = min(open_starts + [s.learned_seq + 1]
                    + ([last.first_seq] if last and last.first_seq is not None else []))
        msgs = await self._messages(s, start - 1, high)
        found, facts = rules.analyze(msgs, final, idle=self._idle(s, final))
        facts = [f for f in facts if f.seq > s.learned_seq]
        by_first = {t.first_seq: t for t in tasks}
        by_seq = {m.seq: m for m in msgs}
        original = await self._original_date(s)
        next_ord = max((t.ord for t in tasks), default=0) + 1
        lessons: list[Lesson] = []
        now = datetime.now().astimezone()
        await self._phase(s, "distilling")
        for rt in found:
            t = by_first.get(rt.seq)
            if t is not None and t.id in taken:
                continue
            if t is not None and t.learned:
                if t is not last or not _judged_again(t, rt):
                    continue
                # its entry keeps the heading it was written under; only what it says changes
                rt.updated = True
                rt.last_seq = t.last_seq if t.last_seq is not None else rt.last_seq
                rt.finished_at = task_time(by_seq.get(rt.last_seq), original, now)
                t.status, t.progress, t.dirty = rt.status, [rt.summary], True
                lessons.append(Lesson(s.id, t.id, _kind(rt), t.description, t.status,
                                      rt.finished_at, rule_task=rt))
                continue
            if t is None:
                t = Task(str(uuid.uuid4()), next_ord, rt.description)
                next_ord += 1
                tasks.append(t)
            t.description, t.status = rt.description, rt.status
            t.first_seq, t.last_seq = rt.first_seq, rt.last_seq
            t.preferences = list(rt.preferences)
            t.progress = [rt.summary] if rt.finished else []
            t.dirty = True
            if rt.finished:
                rt.finished_at = task_time(by_seq.get(rt.last_seq), original, now)
                lessons.append(Lesson(s.id, t.id, _kind(rt), t.description, t.status,
                                      rt.finished_at, preferences=list(rt.preferences),
                                      rule_task=rt))
        if facts:
            at = task_time(by_seq.get(max(f.seq for f in facts)), original, now)
            lessons.append(Lesson(s.id, None, "preferences", "", None, at, facts=facts,
                                  fields={"facts": [f.text for f in facts if f.text]}))
        await self._keep(s, kept, lessons, tasks, high)

    def _idle(self, s: _Session, final: bool) -> bool:
        """Learning because the idle timer fired (not an end, a flush or a full buffer)."""
        return not final and _now() - s.last_activity >= self.config.idle_seconds

    async def _original_date(self, s: _Session) -> str | None:
        """The session's `original_date` config (Acontext's: the day a replayed or
        backfilled session really happened)."""
        try:
            configs = (await self.store.get_session(s.id)).configs or {}
        except NotFound:
            return None
        value = configs.get("original_date")
        return str(value) if value not in (None, "") else None

    async def _learn_llm(self, s: _Session, final: bool, kept: list[Lesson]) -> None:
        assert self.llm is not None and s.space_id is not None
        taken = await self._taken(s)
        tasks = await self._tasks(s)
        for t in tasks:
            if t.id in taken:
                t.learned = True  # its lesson is with the writer: the task cannot change now
        high = self._last_seq(s)
        configs = (await self.store.get_session(s.id)).configs or {}
        original = await self._original_date(s)
        now = task_time(None, original, datetime.now().astimezone())
        new = await self._messages(s, s.learned_seq, high)
        if self._idle(s, final) and rules.answered(new):
            final = True  # idle after the agent's answer: its last task is judged by it now
        open_tasks = [t for t in tasks if not t.learned and not t.finished]
        if new or (final and open_tasks):
            await self._phase(s, "extracting")
            context: list[Msg] = []
            if s.learned_seq >= 0 and self.config.context_messages:
                earlier = await self._messages(
                    s, max(-1, s.learned_seq - self.config.context_messages), s.learned_seq)
                context = earlier
            ex = await extract_tasks(self.llm, tasks, new, final=final, context=context,
                                     known=await known.known_facts(self.store, s.space_id),
                                     criteria=known.task_criteria(configs),
                                     max_turns=self.config.extract_turns,
                                     usage=s.meter.stage("extract"))
            prefs = []
            if ex.preferences:
                prefs.append(Lesson(s.id, None, "preferences", "", None, now,
                                    fields={"facts": ex.preferences}))
            await self._keep(s, kept, prefs, tasks, high)
        todo = [t for t in tasks if t.finished and not t.learned and t.id not in taken]
        if todo:
            await self._phase(s, "distilling")
        skills = known.skill_descriptions(self.store, s.space_id)
        for t in todo:
            msgs: list[Msg] = []
            if t.first_seq is not None:
                msgs = await self._messages(s, t.first_seq - 1,
                                            t.last_seq if t.last_seq is not None else t.first_seq)
                if not msgs:
                    # every message of it was asked to be forgotten: close it, learn nothing
                    t.learned = t.dirty = True
                    await self._keep(s, kept, [], [t])
                    continue
            at = task_time(msgs[-1] if msgs else None, original, now)
            lesson = await distill_task(self.llm, s.id, t, msgs, at, skills=skills,
                                        max_turns=self.config.distill_turns,
                                        usage=s.meter.stage("distill"))
            await self._keep(s, kept, [lesson])

    # -- one space: the writer -----------------------------------------------------------

    def _enqueue(self, s: _Session, lessons: list[Lesson]) -> None:
        if s.space_id is None:
            return
        sp = self._spaces.setdefault(s.space_id, _Space())
        lessons = [lesson for lesson in lessons if lesson.id not in sp.ids]
        sp.queue.extend(lessons)
        sp.ids.update(lesson.id for lesson in lessons)
        for lesson in lessons:
            if lesson.task_id:
                s.inflight.add(lesson.task_id)
        s.queued += len(lessons)
        if not sp.running and self._nursery is not None:
            sp.running = True
            self._nursery.start_soon(self._write_space, s.space_id)

    def _take(self, sp: _Space) -> list[Lesson]:
        batch, sp.queue = sp.queue, []
        for lesson in batch:
            s = self._sessions.get(lesson.session_id)
            if s is not None:
                s.queued -= 1
                s.writing += 1
                self._publish_soon(s)
        return batch

    async def _write_space(self, space_id: str) -> None:
        """The space's writer, while this daemon holds its claim; else it waits for the
        holder to write the lessons queued here (they are in the store) or to go."""
        sp = self._spaces[space_id]
        try:
            if self.config.write_delay > 0:
                await trio.sleep(self.config.write_delay)
            while True:
                try:
                    if not await self._write_step(space_id, sp):
                        break
                except SkillfsError as e:
                    # the database cannot answer now (a batch's own errors are its lessons')
                    log.warning("space %s: cannot look at its lessons: %s", space_id, e)
                    await trio.sleep(POLL_SECONDS)
        finally:
            sp.running = False
            if not sp.queue:
                self._spaces.pop(space_id, None)

    async def _write_step(self, space_id: str, sp: _Space) -> bool:
        """Write one batch if the space is this daemon's to write, else wait a while for
        its holder; False once nothing is left here for the space."""
        if not await self._claims.take("space", space_id):
            if not sp.queue:
                return False
            await trio.sleep(POLL_SECONDS)
            await self._settle_elsewhere(sp, ("written", "failed"))
            return True
        if self._claims.shared:
            await self._adopt([row for row in await self.store.unwritten_lessons(
                space_id=space_id) if row.status == "queued"])
        if not sp.queue:
            return False
        await self._settle_elsewhere(sp, ("written",))
        batch = self._take(sp)
        if batch:
            await self._write_batch(space_id, sp, batch)
        return True

    async def _settle_elsewhere(self, sp: _Space, done: tuple[str, ...]) -> None:
        """Drop from the queue the lessons another daemon has written (or failed)."""
        states = await self.store.learning.lesson_states([lesson.id for lesson in sp.queue])
        settled = [lesson for lesson in sp.queue if states.get(lesson.id, ("",))[0] in done]
        if not settled:
            return
        sp.queue = [lesson for lesson in sp.queue if lesson not in settled]
        for lesson in settled:
            sp.ids.discard(lesson.id)
            s = self._sessions.get(lesson.session_id)
            if s is None:
                continue
            s.queued -= 1
            status, error = states[lesson.id]
            if status == "failed":
                s.error = error or "writing failed"
                s.failed_lessons.append(lesson)
            elif lesson.task_id:
                s.inflight.discard(lesson.task_id)
            self._publish_soon(s)

    async def _take_over(self) -> None:
        """On a shared database: spaces with lessons and nobody writing them (their daemon
        is gone, or never took them), and sessions whose daemon seems gone."""
        while True:
            await trio.sleep(POLL_SECONDS)
            try:
                await self._claims.check()
                for space_id in await self.store.learning.spaces_with_queued_lessons():
                    if space_id in self._spaces or not await self._claims.take(
                            "space", space_id) or space_id in self._spaces:
                        continue  # written here already, or by the daemon holding it
                    self._spaces[space_id] = _Space(running=True)
                    assert self._nursery is not None
                    self._nursery.start_soon(self._write_space, space_id)
                old = now_ns() - int(ADOPT_AFTER_SECONDS * 1e9)
                for row in await self.store.learning.stale_learning(old):
                    if row.session_id not in self._sessions:
                        self._session(row.session_id).retry = True
                        self._kick()
            except SkillfsError as e:
                log.warning("cannot look for learning work left by other daemons: %s", e)

    def _charge(self, batch: list[Lesson], usage: Usage) -> None:
        """Share one writer run's usage among the sessions of its lessons, by lesson count."""
        counts: dict[str, int] = {}
        for lesson in batch:
            counts[lesson.session_id] = counts.get(lesson.session_id, 0) + 1
        for sid, n in counts.items():
            s = self._sessions.get(sid)
            if s is not None:
                share = n / len(batch)
                s.meter.stage("write").add(usage.calls * share, usage.input_tokens * share,
                                           usage.output_tokens * share, usage.counted)

    async def _write_batch(self, space_id: str, sp: _Space, batch: list[Lesson]) -> None:
        sessions = {lesson.session_id for lesson in batch}
        for sid in sessions:
            if sid in self._sessions:
                await self._publish(self._sessions[sid])
        error: str | None = None
        lost = False
        try:
            await self._run_writer(space_id, sp, batch)
            # the lessons and their tasks are done in one transaction; a crash before it
            # writes them again (the edits are redone against the files as they are then)
            await self.store.mark_lessons([lesson.id for lesson in batch], "written")
        except trio.Cancelled:
            raise
        except ClaimLost as e:
            # still queued in the store: the space's next holder writes them
            log.warning("stopped writing space %s: %s", space_id, e)
            lost = True
        except Exception as e:
            log.warning("writing skills for space %s failed: %s", space_id, e, exc_info=True)
            error = f"writing failed: {e}"
            try:
                await self.store.mark_lessons([lesson.id for lesson in batch], "failed", error)
            except Exception:
                log.exception("cannot record that lessons of space %s failed", space_id)
        if lost:
            sp.queue[:0] = batch
        for lesson in batch:
            if not lost:
                sp.ids.discard(lesson.id)
            s = self._sessions.get(lesson.session_id)
            if s is None:
                continue
            s.writing -= 1
            if lost:
                s.queued += 1
            elif error is not None:
                s.error = error
                s.failed_lessons.append(lesson)
            elif lesson.task_id:
                s.inflight.discard(lesson.task_id)
        for sid in {lesson.session_id for lesson in batch}:
            if sid in self._sessions:
                with trio.CancelScope(shield=True):
                    await self._publish(self._sessions[sid])
        self._kick()

    async def _run_writer(self, space_id: str, sp: _Space, batch: list[Lesson]) -> None:
        """The rules' writer or the model's agent over `batch`, each edit made only while
        this daemon still holds the space's claim."""
        def still_held() -> bool:
            return self._claims.held("space", space_id)
        if self.backend == "rules":
            await write_with_rules(self.store, space_id, batch, still_held=still_held)
            return
        assert self.llm is not None
        recorded = await self.store.learning.start_writing([lesson.id for lesson in batch])
        for lesson in batch:
            lesson.recorded = recorded.get(lesson.id, [])
        # `batch` grows when the agent takes lessons that arrived meanwhile
        usage = Usage()
        try:
            await write_with_agent(self.llm, self.store, space_id, batch,
                                   take_more=lambda: self._take(sp), still_held=still_held,
                                   max_turns=self.config.write_turns, usage=usage)
        finally:
            self._charge(batch, usage)
