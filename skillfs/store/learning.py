"""Tasks, learning status and lessons: the learner's state, and the claims on its work.

Daemons sharing one database learn together: what one daemon's learner has not finished
(a session's messages, a space's queued lessons) another may take over, so the learner asks
the store what is unfinished rather than trusting what it remembers.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import Invalid, NotFound
from .claims import Claims
from .context import Service
from .rows import (
    _LEARNING_COLS,
    _LESSON_COLS,
    _TASK_COLS,
    LESSON_STATUSES,
    LearningRow,
    LessonRow,
    TaskRow,
    _json,
    _lesson,
    _task,
    now_ns,
    where,
)


class Learning(Service):
    """Tasks, learning status and lessons."""

    def claims(self) -> Claims:
        """Claims on sessions and spaces, exclusive across the daemons sharing the database."""
        return self.ctx.db.claims()

    async def stored_last_seq(self, session_id: str) -> int:
        """The session's last message as committed, whichever daemon stored it."""
        (seq,) = await self._db(lambda: self.con.execute(
            "SELECT coalesce(max(seq), -1) FROM messages WHERE session_id = ?",
            [session_id]).fetchone())
        return int(seq)

    async def stale_learning(self, older_than_ns: int) -> list[LearningRow]:
        """Sessions whose learning is neither completed nor failed and has not moved since
        `older_than_ns`: their daemon may be gone."""
        rows = await self._db(lambda: self.con.execute(
            f"SELECT {_LEARNING_COLS} FROM learning WHERE status NOT IN "
            f"('completed', 'failed') AND updated_ns < ? ORDER BY created_ns",
            [older_than_ns]).fetchall())
        return [LearningRow(*r) for r in rows]

    # -- tasks and learning status --------------------------------------------------------

    async def list_tasks(self, session_id: str) -> list[TaskRow]:
        rows = await self._db(lambda: self.con.execute(
            f"SELECT {_TASK_COLS} FROM tasks WHERE session_id = ? ORDER BY ord",
            [session_id]).fetchall())
        return [_task(r) for r in rows]

    async def save_task(self, task: TaskRow) -> TaskRow:
        """Insert or replace a task (the learner owns task rows)."""
        task.updated_ns = now_ns()
        if not task.created_ns:
            task.created_ns = task.updated_ns
        await self._write(lambda con: self._sql_task(con, task))
        return task

    @staticmethod
    def _sql_task(con, task: TaskRow) -> None:
        # A task is saved whole each time it changes; it keeps the time it was first saved.
        first = con.execute("SELECT created_ns FROM tasks WHERE id = ?", [task.id]).fetchone()
        if first:
            task.created_ns = first[0]
        con.execute("DELETE FROM tasks WHERE id = ?", [task.id])
        con.execute(f"INSERT INTO tasks ({_TASK_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    [task.id, task.session_id, task.ord, task.description, task.status,
                     _json(task.progress), _json(task.preferences), task.first_seq,
                     task.last_seq, task.learned, task.created_ns, task.updated_ns])
        if task.first_seq is not None:
            con.execute("UPDATE messages SET task_id = ? WHERE session_id = ? AND seq "
                        "BETWEEN ? AND ?", [task.id, task.session_id, task.first_seq,
                                             task.last_seq if task.last_seq is not None
                                             else task.first_seq])

    async def get_learning(self, session_id: str) -> LearningRow | None:
        row = await self._db(lambda: self.con.execute(
            f"SELECT {_LEARNING_COLS} FROM learning WHERE session_id = ?",
            [session_id]).fetchone())
        return LearningRow(*row) if row else None

    async def list_learning(self, space_id: str | None = None) -> list[LearningRow]:
        cond, args = where(space_id=self.ctx.space(space_id).id if space_id is not None else None)
        rows = await self._db(lambda: self.con.execute(
            f"SELECT {_LEARNING_COLS} FROM learning{cond} ORDER BY created_ns", args).fetchall())
        return [LearningRow(*r) for r in rows]

    async def set_learning(self, session_id: str, status: str, error: str | None = None,
                           learned_seq: int | None = None) -> None:
        t = now_ns()
        if learned_seq is None:
            await self._write(lambda con: con.execute(
                "UPDATE learning SET status = ?, error = ?, updated_ns = ? WHERE session_id = ?",
                [status, error, t, session_id]))
        else:
            await self._write(lambda con: con.execute(
                "UPDATE learning SET status = ?, error = ?, learned_seq = ?, updated_ns = ? "
                "WHERE session_id = ?", [status, error, learned_seq, t, session_id]))

    # -- lessons -------------------------------------------------------------------------

    async def save_lessons(self, session_id: str, lessons: Sequence[LessonRow], *,
                           tasks: Sequence[TaskRow] = (),
                           learned_seq: int | None = None) -> list[LessonRow]:
        """Keep new lessons of one session, with the task rows they came from and how far the
        session's messages are now learned, in one transaction: after a crash either all of it
        is there or none of it (and the messages are learned again). NotFound if the session
        does not learn into a space."""
        t = now_ns()
        rows = []
        for i, lesson in enumerate(lessons):
            if lesson.session_id != session_id:
                raise Invalid(f"lesson {lesson.id} belongs to session {lesson.session_id}, "
                              f"not {session_id}")
            if lesson.status not in LESSON_STATUSES:
                raise Invalid(f"unknown lesson status {lesson.status!r}")
            lesson.ord, lesson.created_ns, lesson.updated_ns = i, t, t
            rows.append([lesson.id, lesson.session_id, lesson.space_id, lesson.task_id,
                         lesson.ord, _json(lesson.payload), lesson.status, lesson.error, t, t])
        for task in tasks:
            task.updated_ns = t
            task.created_ns = task.created_ns or t

        def sql(con):
            if not con.execute("SELECT 1 FROM learning WHERE session_id = ?",
                               [session_id]).fetchone():
                raise NotFound(f"session {session_id!r} does not learn into any space")
            for task in tasks:
                self._sql_task(con, task)
            self.ctx.db.insert_many(con, "lessons", 10, rows)
            if learned_seq is not None:
                con.execute("UPDATE learning SET learned_seq = ?, updated_ns = ? "
                            "WHERE session_id = ?", [learned_seq, t, session_id])
        await self._write(sql)
        return list(lessons)

    async def mark_lessons(self, lesson_ids: Sequence[str], status: str,
                           error: str | None = None) -> int:
        """Set lessons' status: "written" also marks their tasks learned, in the same
        transaction; "failed" keeps `error`; "queued" puts them back in line. A written
        lesson stays written. Returns how many lessons changed."""
        if status not in LESSON_STATUSES:
            raise Invalid(f"unknown lesson status {status!r}")
        ids = list(dict.fromkeys(lesson_ids))
        if not ids:
            return 0
        t = now_ns()
        marks = ",".join("?" * len(ids))

        def sql(con):
            changed = con.execute(
                f"UPDATE lessons SET status = ?, error = ?, updated_ns = ? "
                f"WHERE id IN ({marks}) AND status <> 'written' RETURNING task_id",
                [status, error if status == "failed" else None, t, *ids]).fetchall()
            task_ids = [task_id for (task_id,) in changed if task_id is not None]
            if status == "written" and task_ids:
                con.execute(f"UPDATE tasks SET learned = true, updated_ns = ? WHERE id IN "
                            f"({','.join('?' * len(task_ids))}) AND NOT learned",
                            [t, *task_ids])
            return len(changed)
        return await self._write(sql)

    async def list_lessons(self, *, session_id: str | None = None, space_id: str | None = None,
                           status: str | Sequence[str] | None = None) -> list[LessonRow]:
        """Lessons in the order they were kept, optionally of one session, one space and/or
        with the given status(es)."""
        cond, args = where(session_id=session_id, space_id=space_id,
                           status=[status] if isinstance(status, str) else status)
        rows = await self._db(lambda: self.con.execute(
            f"SELECT {_LESSON_COLS} FROM lessons{cond} ORDER BY created_ns, ord", args).fetchall())
        return [_lesson(r) for r in rows]

    async def start_writing(self, lesson_ids: Sequence[str]) -> dict[str, list[str]]:
        """A writer starts on these lessons. For each one an earlier writer run started and
        did not finish (it stopped, or failed), the files ("skill/path") that run changed
        for it: a lesson is touched when a run starts on it, so only those are looked up."""
        ids = list(lesson_ids)
        if not ids:
            return {}
        t = now_ns()

        def sql(con) -> dict[str, list[str]]:
            started = con.execute(
                "SELECT id FROM lessons WHERE id IN (SELECT unnest(?::VARCHAR[])) "
                "AND updated_ns > created_ns AND status <> 'written'", [ids]).fetchall()
            recorded: dict[str, list[str]] = {}
            if started:
                rows = con.execute(
                    "SELECT DISTINCT l.id, k.name, v.path FROM lessons l "
                    "JOIN file_versions v ON v.session_id = l.session_id "
                    "AND v.task_id IS NOT DISTINCT FROM l.task_id "
                    "AND v.author = 'learner' AND v.at_ns >= l.created_ns "
                    "JOIN files f ON f.id = v.file_id JOIN skills k ON k.id = f.skill_id "
                    "WHERE l.id IN (SELECT unnest(?::VARCHAR[])) ORDER BY l.id, k.name, v.path",
                    [[lesson_id for (lesson_id,) in started]]).fetchall()
                for lesson_id, skill, path in rows:
                    recorded.setdefault(lesson_id, []).append(f"{skill}/{path}")
            con.execute("UPDATE lessons SET updated_ns = ? WHERE id IN "
                        "(SELECT unnest(?::VARCHAR[])) AND status <> 'written'", [t, ids])
            return recorded
        return await self._write(sql)

    async def lesson_states(self, lesson_ids: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        """Each lesson's status and error as committed (another daemon may have written it)."""
        ids = list(lesson_ids)
        if not ids:
            return {}
        rows = await self._db(lambda: self.con.execute(
            "SELECT id, status, error FROM lessons WHERE id IN "
            "(SELECT unnest(?::VARCHAR[]))", [ids]).fetchall())
        return {lesson_id: (status, error) for lesson_id, status, error in rows}

    async def spaces_with_queued_lessons(self) -> list[str]:
        """The spaces that have lessons waiting for a writer."""
        rows = await self._db(lambda: self.con.execute(
            "SELECT DISTINCT space_id FROM lessons WHERE status = 'queued' ORDER BY space_id"
        ).fetchall())
        return [space_id for (space_id,) in rows]

    async def unwritten_lessons(self, *, session_id: str | None = None,
                                space_id: str | None = None) -> list[LessonRow]:
        """Lessons not written yet (queued, or failed and waiting for a retry)."""
        return await self.list_lessons(session_id=session_id, space_id=space_id,
                                       status=("queued", "failed"))
