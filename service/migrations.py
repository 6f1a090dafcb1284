"""Schema versions of the DuckDB store, applied in code on open.

Each entry of :data:`MIGRATIONS` moves the database from version ``i`` to ``i + 1``; the
applied version lives in ``schema_version``. A database newer than this code is refused
rather than misread.
"""

from __future__ import annotations

import duckdb

from service.store_errors import StoreVersionError

_COUNTERS = ",\n".join(
    f"    {name} BIGINT NOT NULL DEFAULT 0"
    for name in (
        "prompt_tokens",
        "input_tokens",
        "completion_tokens",
        "output_tokens",
        "requests",
        "total_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
    )
)

_V1 = f"""
CREATE TABLE calls (
    project_id VARCHAR NOT NULL,
    id VARCHAR NOT NULL,
    trace_id VARCHAR,
    parent_id VARCHAR,
    thread_id VARCHAR,
    turn_id VARCHAR,
    op_name VARCHAR,
    display_name VARCHAR,
    started_at TIMESTAMPTZ,
    ended_at TIMESTAMPTZ,
    exception VARCHAR,
    attributes VARCHAR,
    inputs VARCHAR,
    output VARCHAR,
    summary VARCHAR,
    wb_user_id VARCHAR,
    wb_run_id VARCHAR,
    wb_run_step BIGINT,
    wb_run_step_end BIGINT,
    input_refs VARCHAR[],
    output_refs VARCHAR[],
    deleted_at TIMESTAMPTZ,
    PRIMARY KEY (project_id, id)
);
-- raw usage of each ended call, one row per (call, model); rewritten on every end
CREATE TABLE usage (
    project_id VARCHAR NOT NULL,
    id VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
{_COUNTERS}
);
CREATE SEQUENCE price_seq;
CREATE TABLE prices (
    seq BIGINT PRIMARY KEY DEFAULT nextval('price_seq'),
    id VARCHAR NOT NULL,
    pricing_level VARCHAR NOT NULL,
    pricing_level_id VARCHAR NOT NULL,
    provider_id VARCHAR NOT NULL,
    llm_id VARCHAR NOT NULL,
    effective_date TIMESTAMPTZ NOT NULL,
    prompt_token_cost DOUBLE NOT NULL,
    completion_token_cost DOUBLE NOT NULL,
    cache_read_input_token_cost DOUBLE NOT NULL,
    cache_creation_input_token_cost DOUBLE NOT NULL,
    prompt_token_cost_unit VARCHAR,
    completion_token_cost_unit VARCHAR,
    created_by VARCHAR,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE objects (
    project_id VARCHAR NOT NULL,
    object_id VARCHAR NOT NULL,
    digest VARCHAR NOT NULL,
    val VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    base_object_class VARCHAR,
    leaf_object_class VARCHAR,
    wb_user_id VARCHAR,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (project_id, object_id, digest)
);
CREATE TABLE files (
    project_id VARCHAR NOT NULL,
    digest VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    content BLOB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (project_id, digest)
);
"""

# usage rows carry their call's trace id, so that a trace's usage is read by the same
# filter as its calls (row groups skipped by their trace id ranges) instead of a semi-join
# that scans every usage row of the project
_V2 = """
ALTER TABLE usage ADD COLUMN trace_id VARCHAR;
UPDATE usage SET trace_id = c.trace_id FROM calls c
WHERE usage.project_id = c.project_id AND usage.id = c.id;
"""

MIGRATIONS: tuple[str, ...] = (_V1, _V2)
LATEST = len(MIGRATIONS)


def migrate(con: duckdb.DuckDBPyConnection) -> int:
    """Bring the database on ``con`` to :data:`LATEST`; returns the version it was at."""
    con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = con.execute("SELECT max(version) FROM schema_version").fetchone()
    current = int(row[0]) if row and row[0] is not None else 0
    if current > LATEST:
        raise StoreVersionError(
            f"store schema version {current} is newer than this code supports ({LATEST}): "
            "upgrade trace-usage to open it"
        )
    for version in range(current, LATEST):
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(MIGRATIONS[version])
            con.execute("INSERT INTO schema_version VALUES (?)", [version + 1])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    return current
