"""Great Expectations validation of processed files, before they are loaded.

The suite lives next to the contract (`include/contracts/<dataset>.expectations.json`).
A file is validated batch by batch (memory bounded like the transform); its report is
stored as JSON beside the file, and a file that fails any expectation is quarantined and
never loaded, without holding back the others. GX is imported lazily: it is slow to import.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from include.etl import storage
from include.etl.config import PipelineSettings
from include.etl.contract import CONTRACTS_DIR
from include.etl.transform import FileResult

_BATCH_ROWS = 250_000
_EXAMPLES = 5


def suite_path(dataset: str) -> Path:
    return CONTRACTS_DIR / f"{dataset}.expectations.json"


@dataclass
class ValidationReport:
    """Outcome of one file's validation; `failures` names each failed expectation."""

    suite: str
    success: bool = True
    batches: int = 0
    rows: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)

    def reason(self) -> str:
        parts = [
            f"{f['expectation']}({f.get('column') or ''}): {f['unexpected_count']} unexpected" for f in self.failures
        ]
        return "failed expectations: " + "; ".join(parts)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, default=str)


class SuiteValidator:
    """An ephemeral GX context holding one suite, validating pandas DataFrames."""

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
            ExpectationConfiguration(type=e["type"], kwargs=e.get("kwargs", {})).to_domain_obj()
            for e in spec["expectations"]
        ]
        self._suite = self._context.suites.add(gx.ExpectationSuite(name=self.name, expectations=expectations))

    @classmethod
    def for_dataset(cls, dataset: str) -> SuiteValidator:
        return cls(json.loads(suite_path(dataset).read_text(encoding="utf-8")))

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
            report.success = False
            config = r.expectation_config
            column = config.kwargs.get("column")
            failure = next(
                (f for f in report.failures if f["expectation"] == config.type and f.get("column") == column), None
            )
            if failure is None:
                failure = {"expectation": config.type, "column": column, "unexpected_count": 0, "examples": []}
                report.failures.append(failure)
            details = r.result or {}
            failure["unexpected_count"] += int(details.get("unexpected_count") or 0)
            room = _EXAMPLES - len(failure["examples"])
            failure["examples"] += [str(v) for v in (details.get("partial_unexpected_list") or [])[:room]]

    def validate_parquet(self, path: str) -> ValidationReport:
        report = ValidationReport(suite=self.name)
        for batch in pq.ParquetFile(path).iter_batches(batch_size=_BATCH_ROWS):
            self.validate_table(pa.Table.from_batches([batch]), report)
        return report


def _to_pandas(table: pa.Table) -> Any:
    """Decimals as floats: what GX's pandas range comparisons expect."""
    columns = []
    for name, col in zip(table.column_names, table.columns, strict=True):
        columns.append((name, pc.cast(col, pa.float64()) if pa.types.is_decimal(col.type) else col))
    return pa.table(dict(columns)).to_pandas()


def validate_processed(s3: Any, result: FileResult, validator: SuiteValidator, settings: PipelineSettings) -> None:
    """Validate a transformed file in place: store the report, quarantine the file if it fails."""
    assert result.processed_key, "only processed files are validated"
    bucket = settings.processed_bucket
    with tempfile.TemporaryDirectory(prefix="validate-") as tmp:
        path = os.path.join(tmp, "file.parquet")
        s3.download_file(bucket, result.processed_key, path)
        report = validator.validate_parquet(path)
        report_path = os.path.join(tmp, "report.json")
        Path(report_path).write_text(report.to_json(), encoding="utf-8")
        if report.success:
            result.validation_key = _report_key(result.processed_key)
            storage.upload(s3, report_path, bucket, result.validation_key, "application/json", settings.put_args)
            return
        quarantined = storage.zone_key(result.source_key, settings.raw_prefix, settings.rejected_prefix, ".parquet")
        storage.copy(s3, bucket, result.processed_key, bucket, quarantined, settings.put_args)
        storage.delete(s3, bucket, result.processed_key)
        result.validation_key = _report_key(quarantined)
        storage.upload(s3, report_path, bucket, result.validation_key, "application/json", settings.put_args)
    result.status, result.reason = "rejected", report.reason()
    result.processed_key = None
    result.rows_rejected, result.rows_clean = result.rows_read, 0


def _report_key(parquet_key: str) -> str:
    return parquet_key.rsplit(".", 1)[0] + ".validation.json"
