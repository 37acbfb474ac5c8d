"""DuckDB schema and its migrations.

Each migration is a list of statements applied in one transaction; `schema_version` records
how far a database has come. Times are nanoseconds since the epoch (BIGINT) so they serve
directly as file mtimes. JSON is kept as text: DuckDB parses it when a query needs to.
"""

import duckdb

MIGRATIONS: list[list[str]] = [
    # 1: the initial schema (DESIGN.md §4)
    [
        """CREATE TABLE spaces (
            id VARCHAR PRIMARY KEY, name VARCHAR NOT NULL, "user" VARCHAR, meta VARCHAR,
            created_ns BIGINT NOT NULL, updated_ns BIGINT NOT NULL)""",
        """CREATE TABLE skills (
            id VARCHAR PRIMARY KEY, name VARCHAR NOT NULL, description VARCHAR NOT NULL,
            meta VARCHAR, created_ns BIGINT NOT NULL, updated_ns BIGINT NOT NULL,
            "user" VARCHAR)""",
        """CREATE TABLE space_skills (
            space_id VARCHAR NOT NULL, skill_id VARCHAR NOT NULL, created_ns BIGINT NOT NULL)""",
        """CREATE TABLE skill_dirs (
            skill_id VARCHAR NOT NULL, path VARCHAR NOT NULL, created_ns BIGINT NOT NULL)""",
        """CREATE TABLE files (
            id BIGINT PRIMARY KEY, skill_id VARCHAR NOT NULL, path VARCHAR NOT NULL,
            version INTEGER NOT NULL, deleted BOOLEAN NOT NULL, created_ns BIGINT NOT NULL)""",
        """CREATE TABLE file_versions (
            file_id BIGINT NOT NULL, version INTEGER NOT NULL, path VARCHAR NOT NULL,
            content BLOB, sha256 VARCHAR NOT NULL, size BIGINT NOT NULL,
            author VARCHAR NOT NULL, reason VARCHAR, session_id VARCHAR, task_id VARCHAR,
            at_ns BIGINT NOT NULL, deleted BOOLEAN NOT NULL)""",
        """CREATE TABLE sessions (
            id VARCHAR PRIMARY KEY, name VARCHAR, "user" VARCHAR, space_id VARCHAR,
            configs VARCHAR, ended BOOLEAN NOT NULL DEFAULT false,
            created_ns BIGINT NOT NULL, updated_ns BIGINT NOT NULL)""",
        """CREATE TABLE messages (
            session_id VARCHAR NOT NULL, seq BIGINT NOT NULL, role VARCHAR NOT NULL,
            format VARCHAR NOT NULL, body VARCHAR NOT NULL, original VARCHAR,
            task_id VARCHAR, source VARCHAR, created_ns BIGINT NOT NULL, meta VARCHAR)""",
        """CREATE TABLE tasks (
            id VARCHAR PRIMARY KEY, session_id VARCHAR NOT NULL, ord INTEGER NOT NULL,
            description VARCHAR NOT NULL, status VARCHAR NOT NULL, progress VARCHAR,
            preferences VARCHAR, first_seq BIGINT, last_seq BIGINT, learned BOOLEAN NOT NULL
            DEFAULT false, created_ns BIGINT NOT NULL, updated_ns BIGINT NOT NULL)""",
        """CREATE TABLE learning (
            session_id VARCHAR PRIMARY KEY, space_id VARCHAR NOT NULL, status VARCHAR NOT NULL,
            error VARCHAR, learned_seq BIGINT NOT NULL DEFAULT -1,
            created_ns BIGINT NOT NULL, updated_ns BIGINT NOT NULL)""",
        # a distilled lesson waiting for (or done by) its space's skill writer; task_id is
        # NULL for facts stated outside any task; payload is the lesson as JSON
        """CREATE TABLE lessons (
            id VARCHAR PRIMARY KEY, session_id VARCHAR NOT NULL, space_id VARCHAR NOT NULL,
            task_id VARCHAR, ord INTEGER NOT NULL, payload VARCHAR NOT NULL,
            status VARCHAR NOT NULL, error VARCHAR,
            created_ns BIGINT NOT NULL, updated_ns BIGINT NOT NULL)""",
        """CREATE TABLE spool_ledger (
            path VARCHAR NOT NULL, sha256 VARCHAR NOT NULL, file_key VARCHAR,
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
            data BLOB NOT NULL)""",
    ],
    # 3: purging (store/versions.py): a purged version or message keeps its row, its content
    # replaced by a tombstone, and says who purged it, when and why
    [
        "ALTER TABLE file_versions ADD COLUMN purged_by VARCHAR",
        "ALTER TABLE file_versions ADD COLUMN purged_at_ns BIGINT",
        "ALTER TABLE file_versions ADD COLUMN purge_reason VARCHAR",
        "ALTER TABLE messages ADD COLUMN purged_by VARCHAR",
        "ALTER TABLE messages ADD COLUMN purged_at_ns BIGINT",
        "ALTER TABLE messages ADD COLUMN purge_reason VARCHAR",
    ],
    # 4: what deleting a space or a skill removed from its tables, so it can come back
    # (deleted files need nothing new: their versions stay in file_versions).
    # kind 'space' | 'skill'; row: the deleted row as JSON (a skill's row also holds its
    # folders); links: a space's skill ids, or a skill's space ids, as a JSON list
    [
        """CREATE TABLE trash (
            kind VARCHAR NOT NULL, id VARCHAR NOT NULL, name VARCHAR NOT NULL,
            row VARCHAR NOT NULL, links VARCHAR NOT NULL, author VARCHAR NOT NULL,
            at_ns BIGINT NOT NULL)""",
    ],
    # 5: content reads look rows up by file id (store/versions.py). Without these, every
    # cold read scanned the file id column of both tables (a few ms at 20,000 files), and
    # zone maps stop helping once edits append versions of old files at the end.
    [
        "CREATE INDEX file_versions_file ON file_versions(file_id)",
        "CREATE INDEX version_chunks_file ON version_chunks(file_id)",
    ],
]

SCHEMA_VERSION = len(MIGRATIONS)


def migrate(con: duckdb.DuckDBPyConnection) -> int:
    """Bring the database to SCHEMA_VERSION, each migration in its own transaction; return
    the version it had before."""
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
            for stmt in MIGRATIONS[version - 1]:
                con.execute(stmt)
            con.execute("INSERT INTO schema_version VALUES (?)", [version])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    return before
