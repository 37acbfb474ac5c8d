"""The schema and its migrations, written once for DuckDB and PostgreSQL.

Each migration is a list of statements applied in one transaction; `schema_version` records
how far a database has come. Times are nanoseconds since the epoch (BIGINT) so they serve
directly as file mtimes. JSON is kept as text: the database parses it when a query needs to.

The two dialects differ here only in type names (`{text}`, `{blob}`: TYPES) and in indexes:
DuckDB's zone maps serve most lookups where PostgreSQL would scan a table, and DuckDB keeps
its indexes in memory, so an index one of them needs alone is `Only` that one's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# VARCHAR and TEXT are the same type in PostgreSQL; TEXT is its usual name. Its collation
# is C: text compares and sorts by bytes, as in DuckDB, whatever the database's locale.
TYPES = {"duckdb": {"text": "VARCHAR", "blob": "BLOB"},
         "postgres": {"text": 'TEXT COLLATE "C"', "blob": "BYTEA"}}


@dataclass(frozen=True)
class Only:
    """A statement one dialect runs and the other skips."""

    dialect: str
    sql: str


# File ids a daemon takes from PostgreSQL's sequence at a time (store/postgres.py).
FILE_ID_BLOCK = 256
# Held by each transaction that changes what daemons hold in memory, until it commits, so
# that changes' numbers are in commit order (store/feed.py).
FEED_LOCK = 0x736B696C6C6667
FEED_CHANNEL = "skillfs_changes"
# The tables whose rows daemons hold in memory, what a change of one names, and by which
# column: a skill's rows are re-read whole.
FEED_TABLES = (("spaces", "space", "id"), ("skills", "skill", "id"),
               ("space_skills", "skill", "skill_id"), ("skill_dirs", "skill", "skill_id"),
               ("files", "skill", "skill_id"))


MIGRATIONS: list[list[str | Only]] = [
    # 1: the initial schema (DESIGN.md §4)
    [
        """CREATE TABLE spaces (
            id {text} PRIMARY KEY, name {text} NOT NULL, "user" {text}, meta {text},
            created_ns BIGINT NOT NULL, updated_ns BIGINT NOT NULL)""",
        """CREATE TABLE skills (
            id {text} PRIMARY KEY, name {text} NOT NULL, description {text} NOT NULL,
            meta {text}, created_ns BIGINT NOT NULL, updated_ns BIGINT NOT NULL,
            "user" {text})""",
        """CREATE TABLE space_skills (
            space_id {text} NOT NULL, skill_id {text} NOT NULL, created_ns BIGINT NOT NULL)""",
        """CREATE TABLE skill_dirs (
            skill_id {text} NOT NULL, path {text} NOT NULL, created_ns BIGINT NOT NULL)""",
        """CREATE TABLE files (
            id BIGINT PRIMARY KEY, skill_id {text} NOT NULL, path {text} NOT NULL,
            version INTEGER NOT NULL, deleted BOOLEAN NOT NULL, created_ns BIGINT NOT NULL)""",
        """CREATE TABLE file_versions (
            file_id BIGINT NOT NULL, version INTEGER NOT NULL, path {text} NOT NULL,
            content {blob}, sha256 {text} NOT NULL, size BIGINT NOT NULL,
            author {text} NOT NULL, reason {text}, session_id {text}, task_id {text},
            at_ns BIGINT NOT NULL, deleted BOOLEAN NOT NULL)""",
        """CREATE TABLE sessions (
            id {text} PRIMARY KEY, name {text}, "user" {text}, space_id {text},
            configs {text}, ended BOOLEAN NOT NULL DEFAULT false,
            created_ns BIGINT NOT NULL, updated_ns BIGINT NOT NULL)""",
        """CREATE TABLE messages (
            session_id {text} NOT NULL, seq BIGINT NOT NULL, role {text} NOT NULL,
            format {text} NOT NULL, body {text} NOT NULL, original {text},
            task_id {text}, source {text}, created_ns BIGINT NOT NULL, meta {text})""",
        """CREATE TABLE tasks (
            id {text} PRIMARY KEY, session_id {text} NOT NULL, ord INTEGER NOT NULL,
            description {text} NOT NULL, status {text} NOT NULL, progress {text},
            preferences {text}, first_seq BIGINT, last_seq BIGINT, learned BOOLEAN NOT NULL
            DEFAULT false, created_ns BIGINT NOT NULL, updated_ns BIGINT NOT NULL)""",
        """CREATE TABLE learning (
            session_id {text} PRIMARY KEY, space_id {text} NOT NULL, status {text} NOT NULL,
            error {text}, learned_seq BIGINT NOT NULL DEFAULT -1,
            created_ns BIGINT NOT NULL, updated_ns BIGINT NOT NULL)""",
        # a distilled lesson waiting for (or done by) its space's skill writer; task_id is
        # NULL for facts stated outside any task; payload is the lesson as JSON
        """CREATE TABLE lessons (
            id {text} PRIMARY KEY, session_id {text} NOT NULL, space_id {text} NOT NULL,
            task_id {text}, ord INTEGER NOT NULL, payload {text} NOT NULL,
            status {text} NOT NULL, error {text},
            created_ns BIGINT NOT NULL, updated_ns BIGINT NOT NULL)""",
        """CREATE TABLE spool_ledger (
            path {text} NOT NULL, sha256 {text} NOT NULL, file_key {text},
            messages INTEGER NOT NULL, at_ns BIGINT NOT NULL)""",
    ],
    # 2: a version may be stored as a splice of the one before, and content longer than a
    # few KB in chunks (store/versions.py); existing rows stay whole, in place
    [
        "ALTER TABLE file_versions ADD COLUMN delta_depth INTEGER DEFAULT 0",
        "ALTER TABLE file_versions ADD COLUMN chain_bytes BIGINT DEFAULT 0",
        "ALTER TABLE file_versions ADD COLUMN chunks INTEGER DEFAULT 0",
        """CREATE TABLE version_chunks (
            file_id BIGINT NOT NULL, version INTEGER NOT NULL, seq INTEGER NOT NULL,
            data {blob} NOT NULL)""",
    ],
    # 3: purging (store/versions.py): a purged version or message keeps its row, its content
    # replaced by a tombstone, and says who purged it, when and why
    [
        "ALTER TABLE file_versions ADD COLUMN purged_by {text}",
        "ALTER TABLE file_versions ADD COLUMN purged_at_ns BIGINT",
        "ALTER TABLE file_versions ADD COLUMN purge_reason {text}",
        "ALTER TABLE messages ADD COLUMN purged_by {text}",
        "ALTER TABLE messages ADD COLUMN purged_at_ns BIGINT",
        "ALTER TABLE messages ADD COLUMN purge_reason {text}",
    ],
    # 4: what deleting a space or a skill removed from its tables, so it can come back
    # (deleted files need nothing new: their versions stay in file_versions).
    # kind 'space' | 'skill'; row: the deleted row as JSON (a skill's row also holds its
    # folders); links: a space's skill ids, or a skill's space ids, as a JSON list
    [
        """CREATE TABLE trash (
            kind {text} NOT NULL, id {text} NOT NULL, name {text} NOT NULL,
            row {text} NOT NULL, links {text} NOT NULL, author {text} NOT NULL,
            at_ns BIGINT NOT NULL)""",
    ],
    # 5: content reads look rows up by file id (store/versions.py). Without these, every
    # cold read scanned the file id column of both tables (a few ms at 20,000 files), and
    # zone maps stop helping once edits append versions of old files at the end.
    [
        "CREATE INDEX file_versions_file ON file_versions(file_id)",
        "CREATE INDEX version_chunks_file ON version_chunks(file_id)",
    ],
    # 6: what PostgreSQL would otherwise find by scanning a whole table: a session's
    # messages, tasks and lessons, a spool file's ledger rows, a skill's files
    [
        Only("postgres", "CREATE INDEX messages_session ON messages(session_id, seq)"),
        Only("postgres", "CREATE INDEX tasks_session ON tasks(session_id)"),
        Only("postgres", "CREATE INDEX lessons_session ON lessons(session_id)"),
        Only("postgres", "CREATE INDEX lessons_space ON lessons(space_id)"),
        Only("postgres", "CREATE INDEX spool_ledger_path ON spool_ledger(path)"),
        Only("postgres", "CREATE INDEX files_skill ON files(skill_id, path)"),
        Only("postgres", "CREATE INDEX file_versions_key ON file_versions(file_id, version)"),
    ],
    # 7: many hosts. The spool's ledger is per host (two hosts may both hold
    # `alice/s1/0001.jsonl`; a row from before has no host and counts as this host's).
    # On PostgreSQL, several daemons share the database: file ids come from a sequence, in
    # blocks (store/postgres.py); a name is taken once (unique indexes, checked at commit);
    # and every commit that changes spaces, skills, folders or files appends to `changes`
    # and NOTIFYs, from triggers, so no code path can forget to (store/feed.py reads it).
    [
        "ALTER TABLE spool_ledger ADD COLUMN host {text}",
        Only("postgres", "CREATE SEQUENCE file_ids INCREMENT BY " + str(FILE_ID_BLOCK)),
        Only("postgres", "SELECT setval('file_ids', coalesce(max(id), 0) + 1, false) FROM files"),
        Only("postgres", "CREATE UNIQUE INDEX spaces_name ON spaces(name)"),
        Only("postgres", "CREATE UNIQUE INDEX files_live_path ON files(skill_id, path) "
                         "WHERE NOT deleted"),
        Only("postgres", """CREATE TABLE changes (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, writer {text},
            kind {text} NOT NULL, id {text} NOT NULL, at TIMESTAMPTZ NOT NULL DEFAULT now())"""),
        # the highest number trimmed: a daemon behind it re-reads everything
        Only("postgres", "CREATE TABLE changes_trimmed (upto BIGINT NOT NULL)"),
        Only("postgres", "INSERT INTO changes_trimmed VALUES (0)"),
        # one function per key column: static SQL, planned once per connection
        *[Only("postgres", f"""CREATE FUNCTION skillfs_change_{column}() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                -- writers append in commit order: a reader of seq > n misses nothing
                PERFORM pg_advisory_xact_lock({FEED_LOCK});
                INSERT INTO changes (writer, kind, id)
                    SELECT DISTINCT current_setting('skillfs.writer', true), TG_ARGV[0],
                        {column} FROM changed_rows;
                PERFORM pg_notify('{FEED_CHANNEL}', '');
                RETURN NULL;
            END $$""") for column in ("id", "skill_id")],
        *[Only("postgres", f"CREATE TRIGGER {table}_{op.lower()}_feed AFTER {op} ON {table} "
                           f"REFERENCING {'OLD' if op == 'DELETE' else 'NEW'} TABLE AS "
                           "changed_rows FOR EACH STATEMENT "
                           f"EXECUTE FUNCTION skillfs_change_{column}('{kind}')")
          for table, kind, column in FEED_TABLES for op in ("INSERT", "UPDATE", "DELETE")],
    ],
]

SCHEMA_VERSION = len(MIGRATIONS)


def statements(version: int, dialect: str) -> list[str]:
    """Migration `version`'s statements as `dialect` ("duckdb" or "postgres") runs them."""
    types = TYPES[dialect]
    return [stmt.format(**types) if isinstance(stmt, str) else stmt.sql.format(**types)
            for stmt in MIGRATIONS[version - 1]
            if isinstance(stmt, str) or stmt.dialect == dialect]


def migrate(con: Any, dialect: str) -> int:
    """Bring the database to SCHEMA_VERSION, each migration in its own transaction; return
    the version it had before. `con`: a connection executing `?` placeholders, outside a
    transaction."""
    con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    # an aggregate yields one row: fetchall, whose rows need no None check
    before = con.execute("SELECT max(version) FROM schema_version").fetchall()[0][0] or 0
    if before > SCHEMA_VERSION:
        raise RuntimeError(
            f"database schema version {before} is newer than this skillfs ({SCHEMA_VERSION})"
        )
    for version in range(before + 1, SCHEMA_VERSION + 1):
        con.execute("BEGIN TRANSACTION")
        try:
            for stmt in statements(version, dialect):
                con.execute(stmt)
            con.execute("INSERT INTO schema_version VALUES (?)", [version])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    return before
