"""What flows between the tasks: small, JSON-able descriptions of files and outcomes (never data).

- `RawFile` (storage.py): a raw object version to transform, in the listing's groups.
- `FileResult`: what the transform made of one raw version, read by the load and the report.
- `LoadReport.to_dict()` (load.py): what the load did, read by the checks and the summary.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any, Literal

from include.etl.reading.storage import RawObject

# processed: clean rows written (maybe none); rejected: the file as a whole broke the contract
# (or an expectation quarantined it); superseded: the object changed before it could be read;
# failed: an error that is not the data's fault (recorded, retried by a later run).
FileStatus = Literal["processed", "rejected", "superseded", "failed"]


@dataclass
class FileResult:
    """What happened to one raw object version in the transform."""

    source_key: str
    etag: str
    last_modified: str  # ISO 8601, UTC
    size: int = 0
    version_id: str | None = None
    status: FileStatus = "processed"
    quarantined: bool = False  # rejected by a quarantine_file expectation (its Parquet is in rejected/)
    reason: str | None = None  # why the file was rejected or superseded
    error: str | None = None  # failed: the error
    processed_key: str | None = None
    rejected_key: str | None = None
    validation_key: str | None = None
    rows_read: int = 0
    rows_clean: int = 0
    rows_rejected: int = 0
    blank_lines: int = 0
    encoding: str | None = None
    extra_columns: list[str] = field(default_factory=list)
    # Values read differently from their raw bytes, counted by kind ("rows decoded as cp1252": 3).
    reinterpreted: dict[str, int] = field(default_factory=dict)
    # How the file said to read it, where that differs from the contract (a `sep=` line, a BOM).
    notes: list[str] = field(default_factory=list)
    # warn-level expectations the file did not meet.
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def for_version(cls, obj: RawObject, **values: Any) -> FileResult:
        return cls(obj.key, obj.etag, obj.last_modified.isoformat(), obj.size, **values)

    @property
    def raw(self) -> RawObject:
        return RawObject(self.source_key, self.etag, self.size, datetime.fromisoformat(self.last_modified))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FileResult:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
