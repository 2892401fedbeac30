"""The contract's Great Expectations suite, and its report on each processed file.

The suite is generated from the contract (one source of truth): its column rules (NOT NULL,
bounds, allowed values, lengths) and its own expectations, each with the contract's
`severity` and `mostly` in the expectation's meta. The transform already enforced every rule
row by row (and judged the file-level ones), so on processed files the suite is an
independent audit: `reject_row` and `quarantine_file` rules must hold there, `warn` rules may
not. The suite runs batch by batch; row-count rules are judged on the whole file. The report goes
beside the processed file (`<file name>.validation.json`), one entry per rule broken. It runs
beside the load, off the run's critical path; GX is imported lazily (it takes seconds).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from include.etl.contract.model import Contract
from include.etl.contract.results import FileResult
from include.etl.contract.transform import ZoneKeys
from include.etl.reading import storage
from include.etl.settings import DatasetSettings

_BATCH_ROWS = 250_000
_EXAMPLES = 5
_NUMERIC = ("integer", "decimal")
_BOUNDED = ("integer", "decimal", "date", "timestamp")
# Judged on the whole file (the suite runs batch by batch), not by GX.
_ROW_COUNT = "expect_table_row_count_to_be_between"


def suite_spec(contract: Contract) -> dict[str, Any]:
    """The suite as GX's JSON: {"name", "expectations": [{"type", "kwargs", "meta"}]}."""
    expectations: list[dict[str, Any]] = []

    def add(kind: str, severity: str, mostly: float = 1.0, source: str = "column rule", **kwargs: Any) -> None:
        if mostly < 1.0:
            kwargs["mostly"] = mostly
        meta = {"severity": severity, "mostly": mostly, "source": source}
        expectations.append({"type": kind, "kwargs": kwargs, "meta": meta})

    for col in contract.columns:
        if not col.nullable:
            add("expect_column_values_to_not_be_null", "reject_row", column=col.name)
        if col.type in _BOUNDED and (col.min is not None or col.max is not None):
            low, high = (v if col.type not in _NUMERIC else _number(v) for v in col.bounds)
            add("expect_column_values_to_be_between", "reject_row", column=col.name, min_value=low, max_value=high)
        if col.allowed:
            add("expect_column_values_to_be_in_set", "reject_row", column=col.name, value_set=list(col.allowed))
        if col.max_length is not None:
            add("expect_column_value_lengths_to_be_between", "reject_row", column=col.name, max_value=col.max_length)
    for e in contract.expectations:
        kwargs = e.model_dump(exclude={"expectation", "severity", "mostly", "description"}, exclude_none=True)
        for name in ("min_value", "max_value"):
            if name in kwargs and not isinstance(kwargs[name], date):  # (dates and times compare as they are)
                kwargs[name] = _number(kwargs[name])
        if "value_set" in kwargs:
            kwargs["value_set"] = list(kwargs["value_set"])
        add(e.expectation, e.severity, e.mostly, "contract expectation", **kwargs)
    return {"name": f"{contract.dataset}_contract", "expectations": expectations}


def _number(value: Any) -> Any:
    return None if value is None else float(value)


@dataclass
class ValidationReport:
    """One file's validation; `failures` names each expectation the file did not meet."""

    suite: str
    source_key: str = ""
    success: bool = True  # every reject_row and quarantine_file expectation met
    batches: int = 0
    rows: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    report_key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SuiteValidator:
    """An ephemeral GX context holding one suite, validating pandas DataFrames batch by batch."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig
        from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

        self.name = spec["name"]
        self._context = gx.get_context(mode="ephemeral")
        self._context.variables.progress_bars = ProgressBarsConfig(globally=False)
        asset = self._context.data_sources.add_pandas("processed").add_dataframe_asset(self.name)
        self._batch_definition = asset.add_batch_definition_whole_dataframe("file_batch")
        expectations = [
            ExpectationConfiguration(type=e["type"], kwargs=e.get("kwargs", {}), meta=e.get("meta")).to_domain_obj()
            for e in spec["expectations"]
            if e["type"] != _ROW_COUNT
        ]
        self._suite = self._context.suites.add(gx.ExpectationSuite(name=self.name, expectations=expectations))
        self._row_counts = [e for e in spec["expectations"] if e["type"] == _ROW_COUNT]

    @classmethod
    def for_contract(cls, contract: Contract) -> SuiteValidator:
        return cls(suite_spec(contract))

    def validate_table(self, table: pa.Table, report: ValidationReport) -> None:
        """Validate one batch and fold its outcome into the report."""
        result = self._batch_definition.get_batch(batch_parameters={"dataframe": _to_pandas(table)}).validate(
            self._suite
        )
        report.batches += 1
        report.rows += table.num_rows
        for r in result.results:
            if r.success:
                continue
            config = r.expectation_config
            if config is None:  # (GX gives every result its configuration; a failure without one still fails)
                report.success = False
                continue
            details = r.result or {}
            examples = [_example(v) for v in details.get("partial_unexpected_list") or []]
            count = details.get("unexpected_count")
            _fold(report, config.type, config.kwargs.get("column"), config.meta, count, examples)

    def validate_parquet(self, path: str, report: ValidationReport) -> ValidationReport:
        """Validate a Parquet file batch by batch; row-count rules are judged on the whole file."""
        for batch in pq.ParquetFile(path).iter_batches(batch_size=_BATCH_ROWS):
            self.validate_table(pa.Table.from_batches([batch]), report)
        for e in self._row_counts:
            low, high = e["kwargs"].get("min_value"), e["kwargs"].get("max_value")
            if (low is not None and report.rows < low) or (high is not None and report.rows > high):
                _fold(report, _ROW_COUNT, None, e["meta"], None, [f"{report.rows} rows"])
        return report


def _fold(
    report: ValidationReport,
    kind: str,
    column: str | None,
    meta: dict[str, Any] | None,
    count: Any,
    examples: list[str],
) -> None:
    """Add a failed expectation to the report: one entry per rule (expectation, column, severity)."""
    severity = (meta or {}).get("severity", "reject_row")
    if severity != "warn":
        report.success = False
    failure = next(
        (f for f in report.failures if (f["expectation"], f.get("column"), f["severity"]) == (kind, column, severity)),
        None,
    )
    if failure is None:
        failure = {"expectation": kind, "column": column, "severity": severity, "unexpected_count": 0, "examples": []}
        report.failures.append(failure)
    failure["unexpected_count"] += int(count or 0)
    failure["examples"] += examples[: _EXAMPLES - len(failure["examples"])]


def _example(value: Any) -> str:
    """An unexpected value as a report shows it: null for a missing one (GX gives None or NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "null"
    return str(value)


def _to_pandas(table: pa.Table) -> Any:
    """Decimals as floats: what GX's pandas range comparisons expect."""
    columns = []
    for name, col in zip(table.column_names, table.columns, strict=True):
        columns.append((name, pc.cast(col, pa.float64()) if pa.types.is_decimal(col.type) else col))
    return pa.table(dict(columns)).to_pandas()


def validate_processed(
    s3: Any, result: FileResult, validator: SuiteValidator, settings: DatasetSettings
) -> dict[str, Any]:
    """Validate one processed file and store the report beside it; returns the report as a dict."""
    assert result.processed_key, "only processed files are validated"
    bucket = settings.processed_bucket
    report = ValidationReport(suite=validator.name, source_key=result.source_key)
    with tempfile.TemporaryDirectory(prefix="validate-") as tmp:
        path = os.path.join(tmp, "file.parquet")
        try:
            storage.download_version(s3, bucket, result.processed_key, result.raw, path)
        except storage.ObjectChangedError:
            report.failures.append(
                {
                    "expectation": "(not validated)",
                    "column": None,
                    "severity": "warn",
                    "unexpected_count": 0,
                    "examples": ["a newer version was processed meanwhile"],
                }
            )
            return report.to_dict()
        validator.validate_parquet(path, report)
        report.report_key = ZoneKeys(result.source_key, settings).report
        report_path = os.path.join(tmp, "report.json")
        Path(report_path).write_text(json.dumps(report.to_dict(), indent=2, default=str), encoding="utf-8")
        extra = {"Metadata": storage.source_metadata(result.raw), **settings.put_args}
        storage.upload(s3, report_path, bucket, report.report_key, "application/json", extra)
    return report.to_dict()
