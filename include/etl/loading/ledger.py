"""The file ledger: every raw object version a run has listed, and what became of it.

One row per version (key + ETag + LastModified). A version is `pending` from the moment a run
lists it until a load records it as `loaded` (its rows are in the table), `rejected` (the
file as a whole broke the contract: its rows are in rejected/, the previous version's stay
live), `superseded` (a newer version of the key came first), `failed` (an error that is not
the data's fault; retried by later runs, `attempts` counts them) or `parked` (failed
`max_attempts` times: no run takes it up until someone retries or skips it). A `loaded`
version whose object is deleted is marked `deleted_at` (rows kept) or becomes `deleted`
(rows removed), as the contract says. At most one version per key is `loaded`: the one whose
rows the table holds.

Listing takes up every `pending` and `failed` version whatever its partition's age, so no
file is abandoned silently. Loads record their files in the transaction that merges their rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from psycopg import sql

from include.etl.names import schema_of, table_ident
from include.etl.reading.layout import partition_day
from include.etl.reading.storage import RawObject

Status = Literal["pending", "failed", "parked", "loaded", "rejected", "superseded", "skipped", "deleted", "ignored"]
OPEN: tuple[Status, ...] = ("pending", "failed")
DONE: tuple[Status, ...] = ("loaded", "rejected", "skipped", "deleted")
_STATUSES = "('pending', 'failed', 'parked', 'loaded', 'rejected', 'superseded', 'skipped', 'deleted', 'ignored')"


@dataclass(frozen=True)
class LedgerRow:
    """A version's row as the ledger holds it."""

    source_key: str
    etag: str
    last_modified: datetime
    status: Status
    attempts: int
    reason: str | None
    last_error: str | None
    first_seen_at: datetime
    deleted_at: datetime | None

    @property
    def version(self) -> tuple[str, datetime]:
        return (self.etag, self.last_modified)


@dataclass
class Outcome:
    """What a load records for one version."""

    source_key: str
    etag: str
    last_modified: datetime
    status: Status
    run_id: str
    size_bytes: int | None = None
    version_id: str | None = None
    reason: str | None = None
    quarantined: bool = False
    error: str | None = None  # failed: what went wrong this attempt
    rows_read: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    rows_duplicate: int = 0
    # Clean rows with distinct keys: the rows a loaded file holds in the table or the duplicates table.
    distinct_keys: int | None = None
    blank_lines: int = 0
    encoding: str | None = None
    reinterpreted: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # warn-level expectations the file did not meet
    processed_key: str | None = None
    rejected_key: str | None = None
    validation_key: str | None = None
    # Filled in by record(): the attempts so far and whether this one parked the file.
    attempts: int = 0
    parked: bool = False


_COLUMNS = """
    source_key      text        NOT NULL,
    etag            text        NOT NULL,
    last_modified   timestamptz NOT NULL,
    version_id      text,
    size_bytes      bigint,
    status          text        NOT NULL CONSTRAINT {status_check} CHECK (status IN {statuses}),
    reason          text,
    quarantined     boolean     NOT NULL DEFAULT false,
    attempts        integer     NOT NULL DEFAULT 0,
    last_error      text,
    first_seen_at   timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    loaded_at       timestamptz,
    deleted_at      timestamptz,
    rows_read       bigint      NOT NULL DEFAULT 0,
    rows_loaded     bigint      NOT NULL DEFAULT 0,
    rows_rejected   bigint      NOT NULL DEFAULT 0,
    rows_duplicate  bigint      NOT NULL DEFAULT 0,
    blank_lines     bigint      NOT NULL DEFAULT 0,
    encoding        text,
    reinterpreted   jsonb       NOT NULL DEFAULT '{{}}',
    notes           jsonb       NOT NULL DEFAULT '[]',
    processed_key   text,
    rejected_key    text,
    validation_key  text,
    run_id          text,
    partition_day   date,
    distinct_keys   bigint,
    PRIMARY KEY (source_key, etag, last_modified),
    CHECK (status NOT IN ('loaded', 'rejected') OR rows_read = rows_loaded + rows_rejected + rows_duplicate)
"""


def ddl_lock(cur: Any) -> None:
    """One session at a time creates the pipeline's schemas and tables (held to the end of the transaction)."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtext('etl: create tables'))")


def ensure_ledger(cur: Any, ledger_table: str) -> None:
    """Create the ledger, its schema and its indexes if missing, or bring an older one up to date (call under
    ddl_lock)."""
    cur.execute("SELECT to_regclass(%s)", (table_ident(ledger_table).as_string(cur),))
    if cur.fetchone()[0] is not None:
        _upgrade(cur, ledger_table)
        return  # no DDL, so no lock on a ledger a load is writing to
    ident = table_ident(ledger_table)
    schema, name = schema_of(ledger_table), ledger_table.split(".", 1)[-1]
    cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    cur.execute(
        sql.SQL("CREATE TABLE IF NOT EXISTS {} (" + _COLUMNS + ")").format(
            ident, status_check=sql.Identifier(f"{name}_status_check"), statuses=sql.SQL(_STATUSES)
        )
    )
    # At most one live version per key: the one whose rows the table holds.
    cur.execute(
        sql.SQL("CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} (source_key) WHERE status = 'loaded'").format(
            sql.Identifier(f"{name}_live"), ident
        )
    )
    cur.execute(
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (status) WHERE status IN ('pending', 'failed', 'parked')").format(
            sql.Identifier(f"{name}_open"), ident
        )
    )


_ADDED = {"partition_day": "date", "distinct_keys": "bigint"}  # columns later versions added


def _upgrade(cur: Any, ledger_table: str) -> None:
    """A ledger made by an earlier version: add the `ignored` status, the partition_day column (filled from the
    keys) and distinct_keys (unknown for files loaded before: every clean row was kept then). Nothing to do, and
    no lock taken, once it has them."""
    schema, name = schema_of(ledger_table), ledger_table.split(".", 1)[-1]
    cur.execute(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
        "AND column_name = ANY(%s)",
        (schema, name, list(_ADDED)),
    )
    if cur.fetchone()[0] == len(_ADDED):
        return
    ident = table_ident(ledger_table)
    check = sql.Identifier(f"{name}_status_check")
    for column, kind in _ADDED.items():
        cur.execute(
            sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                ident, sql.Identifier(column), sql.SQL(kind)
            )
        )
    cur.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(ident, check))
    cur.execute(
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK (status IN {})").format(ident, check, sql.SQL(_STATUSES))
    )
    cur.execute(sql.SQL("SELECT DISTINCT source_key FROM {}").format(ident))
    days = [(day, key) for (key,) in cur.fetchall() if (day := partition_day(key)) is not None]
    cur.executemany(sql.SQL("UPDATE {} SET partition_day = %s WHERE source_key = %s").format(ident), days)


_ROW_FIELDS = "source_key, etag, last_modified, status, attempts, reason, last_error, first_seen_at, deleted_at"


def rows_for(cur: Any, ledger_table: str, keys: Sequence[str]) -> list[LedgerRow]:
    """Every version the ledger holds for these keys."""
    if not keys:
        return []
    cur.execute(
        sql.SQL("SELECT " + _ROW_FIELDS + " FROM {} WHERE source_key = ANY(%s)").format(table_ident(ledger_table)),
        (list(keys),),
    )
    return [LedgerRow(*r) for r in cur.fetchall()]


def live(cur: Any, ledger_table: str, keys: Sequence[str]) -> dict[str, LedgerRow]:
    """{key: its loaded version} for these keys."""
    return {r.source_key: r for r in rows_for(cur, ledger_table, keys) if r.status == "loaded"}


def live_under(cur: Any, ledger_table: str, prefix: str) -> list[LedgerRow]:
    """Loaded versions whose key starts with prefix (a partition)."""
    cur.execute(
        sql.SQL("SELECT " + _ROW_FIELDS + " FROM {} WHERE status = 'loaded' AND starts_with(source_key, %s)").format(
            table_ident(ledger_table)
        ),
        (prefix,),
    )
    return [LedgerRow(*r) for r in cur.fetchall()]


def by_status(cur: Any, ledger_table: str, statuses: Sequence[Status]) -> list[LedgerRow]:
    cur.execute(
        sql.SQL("SELECT " + _ROW_FIELDS + " FROM {} WHERE status = ANY(%s) ORDER BY source_key").format(
            table_ident(ledger_table)
        ),
        (list(statuses),),
    )
    return [LedgerRow(*r) for r in cur.fetchall()]


@dataclass(frozen=True)
class Observation:
    """What listing found against the ledger."""

    todo: list[RawObject]  # new versions, and pending or failed ones, to transform and load
    done: list[RawObject]  # versions already loaded, rejected, skipped
    parked: list[RawObject]  # versions waiting for someone to retry or skip them


def observe(
    cur: Any,
    ledger_table: str,
    listed: Sequence[RawObject],
    run_id: str,
    reprocess: bool = False,
    raw_prefix: str | None = None,
) -> Observation:
    """Record the listed current versions (new ones as pending) and decide which to take up.

    Older versions of a listed key that never loaded become superseded. With `reprocess`,
    loaded and rejected versions are taken up again too.
    """
    rows = {(r.source_key, r.etag, r.last_modified): r for r in rows_for(cur, ledger_table, [o.key for o in listed])}
    todo: list[RawObject] = []
    done: list[RawObject] = []
    parked: list[RawObject] = []
    new: list[RawObject] = []
    revived: list[RawObject] = []
    for obj in listed:
        row = rows.get((obj.key, obj.etag, obj.last_modified))
        if row is None:
            new.append(obj)
            todo.append(obj)
        elif row.status in OPEN:
            todo.append(obj)
        elif row.status == "superseded":
            revived.append(obj)  # the key holds this version again: it is the newest now
            todo.append(obj)
        elif row.status == "parked":
            parked.append(obj)
        elif reprocess and row.status in ("loaded", "rejected"):
            todo.append(obj)
        else:
            done.append(obj)
    table = table_ident(ledger_table)
    if new:
        cur.executemany(
            sql.SQL(
                "INSERT INTO {} (source_key, etag, last_modified, size_bytes, status, run_id, partition_day) "
                "VALUES (%s, %s, %s, %s, 'pending', %s, %s) ON CONFLICT DO NOTHING"
            ).format(table),
            [(o.key, o.etag, o.last_modified, o.size, run_id, partition_day(o.key, raw_prefix)) for o in new],
        )
    if revived:
        cur.executemany(
            sql.SQL(
                "UPDATE {} SET status = 'pending', updated_at = now(), run_id = %s "
                "WHERE source_key = %s AND etag = %s AND last_modified = %s AND status = 'superseded'"
            ).format(table),
            [(run_id, o.key, o.etag, o.last_modified) for o in revived],
        )
    # Older versions of these keys that never loaded will not be: a newer one exists.
    cur.executemany(
        sql.SQL(
            "UPDATE {} SET status = 'superseded', reason = 'a newer version of the object was listed', "
            "updated_at = now() WHERE source_key = %s AND status IN ('pending', 'failed', 'parked') "
            "AND (etag, last_modified) <> (%s, %s)"
        ).format(table),
        [(o.key, o.etag, o.last_modified) for o in listed],
    )
    return Observation(todo, done, parked)


def expect_version(
    cur: Any, ledger_table: str, obj: RawObject, run_id: str, why: str, raw_prefix: str | None = None
) -> None:
    """Record a version as pending (e.g. the newer version that superseded the one a run read)."""
    cur.execute(
        sql.SQL(
            "INSERT INTO {} (source_key, etag, last_modified, size_bytes, status, reason, run_id, partition_day) "
            "VALUES (%s, %s, %s, %s, 'pending', %s, %s, %s) ON CONFLICT DO NOTHING"
        ).format(table_ident(ledger_table)),
        (obj.key, obj.etag, obj.last_modified, obj.size, why, run_id, partition_day(obj.key, raw_prefix)),
    )


def ignore(cur: Any, ledger_table: str, objects: Sequence[tuple[RawObject, str]], run_id: str) -> list[dict[str, str]]:
    """Record objects under the raw prefix that are not read (wrong layout, not a CSV), each with its reason.
    Returns those recorded now ({"key", "reason"}): a version is recorded once, however often it is listed."""
    if not objects:
        return []
    table = table_ident(ledger_table)
    known = {(r.source_key, r.etag, r.last_modified) for r in rows_for(cur, ledger_table, [o.key for o, _ in objects])}
    new = [(o, why) for o, why in objects if (o.key, o.etag, o.last_modified) not in known]
    cur.executemany(
        sql.SQL(
            "INSERT INTO {} (source_key, etag, last_modified, size_bytes, status, reason, run_id) "
            "VALUES (%s, %s, %s, %s, 'ignored', %s, %s) ON CONFLICT DO NOTHING"
        ).format(table),
        [(o.key, o.etag, o.last_modified, o.size, why, run_id) for o, why in new],
    )
    return [{"key": o.key, "reason": why} for o, why in new]


def open_partitions(cur: Any, ledger_table: str) -> list[str]:
    """Folders (`<prefix>/dt=.../`) of the versions still to load (pending or failed), any age."""
    cur.execute(
        sql.SQL(
            "SELECT DISTINCT regexp_replace(source_key, '[^/]*$', '') FROM {} WHERE status IN ('pending', 'failed')"
        ).format(table_ident(ledger_table))
    )
    return sorted(r[0] for r in cur.fetchall())


def mark_deleted(cur: Any, ledger_table: str, keys: Iterable[str], remove: bool) -> None:
    """Loaded versions whose object is gone: rows kept (deleted_at) or removed (status deleted)."""
    keys = list(keys)
    if not keys:
        return
    status = sql.SQL("'deleted'") if remove else sql.SQL("status")
    cur.execute(
        sql.SQL(
            "UPDATE {} SET status = {}, deleted_at = coalesce(deleted_at, now()), updated_at = now() "
            "WHERE source_key = ANY(%s) AND status = 'loaded'"
        ).format(table_ident(ledger_table), status),
        (keys,),
    )


def retry(cur: Any, ledger_table: str, keys: Sequence[str] | None) -> list[str]:
    """Parked (or failed) versions back to pending with no attempts; all of them when keys is None."""
    cur.execute(
        sql.SQL(
            "UPDATE {} SET status = 'pending', attempts = 0, updated_at = now() "
            "WHERE status IN ('parked', 'failed') AND (%s::text[] IS NULL OR source_key = ANY(%s)) "
            "RETURNING source_key"
        ).format(table_ident(ledger_table)),
        (list(keys) if keys is not None else None, list(keys) if keys is not None else None),
    )
    return sorted(r[0] for r in cur.fetchall())


def skip(cur: Any, ledger_table: str, keys: Sequence[str], reason: str, run_id: str) -> list[str]:
    """Open or parked versions of these keys are given up on, with the reason (no longer listed)."""
    cur.execute(
        sql.SQL(
            "UPDATE {} SET status = 'skipped', reason = %s, updated_at = now(), run_id = %s "
            "WHERE source_key = ANY(%s) AND status IN ('pending', 'failed', 'parked') RETURNING source_key"
        ).format(table_ident(ledger_table)),
        (reason, run_id, list(keys)),
    )
    return sorted(r[0] for r in cur.fetchall())


def record(
    cur: Any, ledger_table: str, outcomes: Sequence[Outcome], max_attempts: int, raw_prefix: str | None = None
) -> None:
    """Write what a load did with each version, in the load's transaction.

    A loaded version makes the key's previous loaded version superseded; a failed one counts an
    attempt and is parked after `max_attempts`.
    """
    table = table_ident(ledger_table)
    loaded = [o for o in outcomes if o.status == "loaded"]
    if loaded:
        cur.executemany(
            sql.SQL(
                "UPDATE {} SET status = 'superseded', reason = 'replaced by a newer version', updated_at = now() "
                "WHERE source_key = %s AND status = 'loaded' AND (etag, last_modified) <> (%s, %s)"
            ).format(table),
            [(o.source_key, o.etag, o.last_modified) for o in loaded],
        )
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        before = {
            (r.source_key, r.etag, r.last_modified): r
            for r in rows_for(cur, ledger_table, [o.source_key for o in failed])
        }
        for o in failed:
            row = before.get((o.source_key, o.etag, o.last_modified))
            if row is not None and row.status == "loaded":
                continue  # a reprocess that failed: the version stays loaded (its rows are the table's); error noted
            o.attempts = (row.attempts if row else 0) + 1
            if o.attempts >= max_attempts:
                o.status, o.parked = "parked", True
    for o in outcomes:
        if o.status != "failed" and o.status != "parked":
            o.attempts = 0
    names = [
        "source_key",
        "etag",
        "last_modified",
        "version_id",
        "size_bytes",
        "status",
        "reason",
        "quarantined",
        "attempts",
        "last_error",
        "rows_read",
        "rows_loaded",
        "rows_rejected",
        "rows_duplicate",
        "distinct_keys",
        "blank_lines",
        "encoding",
        "reinterpreted",
        "notes",
        "processed_key",
        "rejected_key",
        "validation_key",
        "run_id",
        "partition_day",
    ]
    keep_on_failure = {"source_key", "etag", "last_modified", "size_bytes", "version_id", "partition_day"}
    rows = []
    for o in outcomes:
        values = {n: getattr(o, n, None) for n in names}
        values["last_error"] = o.error
        values["partition_day"] = partition_day(o.source_key, raw_prefix)
        values["reinterpreted"] = json.dumps(o.reinterpreted)
        values["notes"] = json.dumps([*o.notes, *(f"warning: {w}" for w in o.warnings)])
        rows.append(values)
    for status_group in (True, False):
        group = [r for r in rows if (r["status"] in ("failed", "parked")) == status_group]
        if not group:
            continue
        # A failed attempt keeps the counts of an earlier try, if any; it records the error. A failed
        # reprocess of a loaded version leaves it loaded (its rows stay the table's) and records the error.
        replaced = ["last_error", "run_id"] if status_group else [n for n in names if n not in keep_on_failure]
        kept_loaded = sql.SQL(
            ", status = CASE WHEN {t}.status = 'loaded' THEN {t}.status ELSE EXCLUDED.status END"
            ", attempts = CASE WHEN {t}.status = 'loaded' THEN {t}.attempts ELSE EXCLUDED.attempts END"
        ).format(t=table)
        cur.executemany(
            sql.SQL(
                "INSERT INTO {t} ({cols}, loaded_at) VALUES ({values}, {loaded_at}) "
                "ON CONFLICT (source_key, etag, last_modified) DO UPDATE SET {updates}, updated_at = now()"
                "{kept_loaded}{loaded_update}"
            ).format(
                t=table,
                cols=sql.SQL(", ").join(map(sql.Identifier, names)),
                values=sql.SQL(", ").join(sql.Placeholder(n) for n in names),
                loaded_at=sql.SQL("CASE WHEN %(status)s = 'loaded' THEN now() END"),
                updates=sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n)) for n in replaced),
                kept_loaded=kept_loaded if status_group else sql.SQL(""),
                loaded_update=sql.SQL(
                    ""
                    if status_group
                    else ", loaded_at = CASE WHEN EXCLUDED.status = 'loaded' THEN now() ELSE {t}.loaded_at END"
                ).format(t=table),
            ),
            group,
        )
