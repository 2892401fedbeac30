"""Never silently changed, as a property: the mutation oracle.

Hypothesis generates clean source rows; `tests/etl/mutations.py` writes them as a CSV file through mutations from
the catalogue `tests/data/mutations.yml` (each alone, then combinations); the file goes through the real
transform over the moto server, and the oracle asserts, for each source row:

- loaded with exactly its values, or rejected with a reason, or its file rejected with a reason; never a third
  outcome (loaded with another value, lost, or loaded though the file changed what it means);
- nothing is loaded that no source row meant (a header, a footer);
- `rows_read = rows_clean + rows_rejected` (a transform sees no duplicates: each source row has its own key).

`make test` runs every mutation alone and a bounded number of combinations with a random seed, printed in the
report header (`ORACLE_SEED=<n> make test` repeats a run); `ETL_SWEEP=1` runs the larger sweep.
"""

from __future__ import annotations

import csv
import io
import os
import re
import unicodedata
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from include.etl.contract.model import parse_contract
from include.etl.contract.results import FileResult
from include.etl.contract.transform import transform_file
from include.etl.reading import storage
from include.etl.settings import DatasetSettings
from tests.etl.mutations import CATALOGUE, COLUMNS, CONTRACT, NULLS, SEED, Doc, Row, rendered
from tests.helpers import moto_s3

SWEEP = bool(os.environ.get("ETL_SWEEP"))
SETTINGS = DatasetSettings(dataset="oracle", raw_bucket="raw", processed_bucket="processed")
ORACLE = parse_contract(CONTRACT)
_uploads = iter(range(10**9))

# Letters with accents (composed), spaces, and the punctuation names carry: what a name column holds.
_NAME_CHARS = st.sampled_from(
    list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789éèàçüößñøÉ&'\",./()-“”")
)


@st.composite
def _name(draw: Any) -> str:
    words = draw(st.lists(st.text(_NAME_CHARS, min_size=1, max_size=8), min_size=1, max_size=3))
    text = " ".join(words)
    # A name that is a null spelling, or that a spreadsheet formula wraps, means something else: not a source value.
    if text in NULLS or re.fullmatch(r'\s*=".*"\s*', text):
        text = "N " + text
    return text


@st.composite
def _rows(draw: Any) -> list[Row]:
    n = draw(st.integers(2, 10))
    rows = []
    for i in range(n):
        rows.append(
            Row(
                id=f"R{draw(st.integers(1000, 9999))}{i:02d}",
                name=draw(_name()),
                qty=draw(st.integers(-50, 250_000)),
                amount=Decimal(draw(st.integers(-9_999_999, 9_999_999))) / 100,
                day=draw(st.dates(date(2020, 1, 1), date(2030, 12, 31))),
                flag=draw(st.booleans()),
            )
        )
    # One day past the 12th that is not the last row: a file written day first shows it (else no reader could tell).
    anchor = draw(st.integers(0, n - 2))
    rows[anchor] = Row(**{**rows[anchor].__dict__, "day": rows[anchor].day.replace(day=25)})
    return rows


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    with moto_s3(SETTINGS.raw_bucket, SETTINGS.processed_bucket) as client:
        yield client


def _transform(s3: Any, body: bytes, gz: bool) -> tuple[FileResult, list[dict[str, Any]], list[list[str]]]:
    prefix = storage.partition_prefix(SETTINGS.raw_prefix, "2026-03-31")
    key = f"{prefix}file-{next(_uploads)}.csv{'.gz' if gz else ''}"
    s3.put_object(Bucket=SETTINGS.raw_bucket, Key=key, Body=body)
    objects, _ = storage.list_partition(s3, SETTINGS.raw_bucket, prefix)
    result = transform_file(s3, next(o for o in objects if o.key == key), ORACLE, SETTINGS)
    loaded: list[dict[str, Any]] = []
    if result.processed_key:
        data = s3.get_object(Bucket=SETTINGS.processed_bucket, Key=result.processed_key)["Body"].read()
        loaded = pq.read_table(io.BytesIO(data)).to_pylist()
    rejected: list[list[str]] = []
    if result.rows_rejected:
        text = s3.get_object(Bucket=SETTINGS.processed_bucket, Key=result.rejected_key)["Body"].read().decode()
        rejected = list(csv.reader(io.StringIO(text, newline="")))[1:]
    return result, loaded, rejected


def judge(
    rows: list[Row], doc: Doc, result: FileResult, loaded: list[dict[str, Any]], rejected: list[list[str]]
) -> list[str]:
    """The third outcomes: one line per source row (or loaded row) that is neither loaded exactly nor rejected."""
    problems = []
    if result.rows_read != result.rows_clean + result.rows_rejected:
        problems.append(f"rows_read {result.rows_read} != clean {result.rows_clean} + rejected {result.rows_rejected}")
    if result.status == "rejected":
        if not result.reason:
            problems.append("the file is rejected without a reason")
        if loaded:
            problems.append("a rejected file has loaded rows")
        return problems
    by_id = {r["id"]: r for r in loaded}
    source = {r.id: r for r in rows}
    for extra in set(by_id) - set(source):
        problems.append(f"loaded a row no source row meant: {by_id[extra]}")
    for one, other in doc.exclusive:
        if one & set(by_id) and other & set(by_id):
            problems.append(
                f"loaded rows of two kinds the file mixes: {sorted(one & set(by_id))}, {sorted(other & set(by_id))}"
            )
    for row in rows:
        got = by_id.get(row.id)
        if got is not None:
            if row.id in doc.damaged:
                problems.append(f"{row.id}: loaded, though the file changed what it means: {got}")
            changed = {c: (getattr(row, c), got[c]) for c in COLUMNS if got[c] != getattr(row, c)}
            if changed:
                problems.append(f"{row.id}: loaded with other values (source, loaded): {changed}")
            continue
        reasons = [r[1] for r in rejected if any(_holds(f, row.id) for f in r[2:])]
        if not reasons:
            problems.append(f"{row.id}: neither loaded nor rejected (lost)")
        elif not all(reasons):
            problems.append(f"{row.id}: rejected without a reason")
    return problems


def _holds(field: str, row_id: str) -> bool:
    """Whether a rejected row's field holds the id (invisible characters and NULs a mutation put in it aside)."""
    seen = "".join(c for c in field if c != "\x00" and unicodedata.category(c) != "Cf")
    return re.search(rf"(?<![0-9A-Za-z]){row_id}(?![0-9])", seen) is not None


def _check(s3: Any, rows: list[Row], mutations: list[dict[str, Any]], seed_: int) -> None:
    body, doc = rendered(rows, mutations, seed_)
    result, loaded, rejected = _transform(s3, body, gz=doc.compress)
    problems = judge(rows, doc, result, loaded, rejected)
    names = [m["name"] for m in mutations]
    assert not problems, (
        f"mutations {names} (skipped: {doc.skipped}) gave a third outcome:\n  "
        + "\n  ".join(problems)
        + f"\nfile: {body[:2000]!r}\nresult: {result}"
    )


_ALONE_ROWS = [
    Row("R100001", "Crème brûlée", 3, Decimal("1234.50"), date(2026, 3, 1), True),
    Row("R100002", "Pen, blue", -2, Decimal("-12.05"), date(2026, 3, 25), False),
    Row("R100003", 'The "Big" One', 250000, Decimal("0.99"), date(2026, 11, 5), True),
    Row("R100004", "Zoë Ltd", 42, Decimal("-99999.00"), date(2026, 2, 3), False),
]


def test_the_catalogue_has_40_mutations_or_more_each_with_a_source() -> None:
    assert len(CATALOGUE) >= 40
    assert len({m["name"] for m in CATALOGUE}) == len(CATALOGUE)
    assert all(m["source"].startswith("https://") for m in CATALOGUE)


@pytest.mark.parametrize("mutation", CATALOGUE, ids=[m["name"] for m in CATALOGUE])
def test_each_mutation_alone(s3: Any, mutation: dict[str, Any]) -> None:
    _check(s3, _ALONE_ROWS, [mutation], seed_=SEED)


@seed(SEED)
@settings(
    max_examples=2000 if SWEEP else 60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
@given(
    rows=_rows(),
    mutations=st.lists(st.sampled_from(CATALOGUE), min_size=1, max_size=4, unique_by=lambda m: m["name"]),
    seed_=st.integers(0, 2**31),
)
def test_mutations_combined(s3: Any, rows: list[Row], mutations: list[dict[str, Any]], seed_: int) -> None:
    _check(s3, rows, mutations, seed_)
