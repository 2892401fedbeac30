"""Local stack layout and ports: the one place their defaults live.

Override any port with an environment variable (`LOCAL_PG_PORT=6543 make up`), and the state
folder with LOCAL_STATE_DIR (two stacks side by side need both).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STATE_DIR = PROJECT_ROOT / ".local"


def state_dir() -> Path:
    """Where the local stack keeps its state: `.local/`, or the folder LOCAL_STATE_DIR names."""
    return Path(os.environ.get("LOCAL_STATE_DIR") or DEFAULT_STATE_DIR).resolve()


WAREHOUSE_DB = "warehouse"
AIRFLOW_DB = "airflow"
DB_USER = "etl"
BUCKETS = ("raw", "processed")
REGION = "us-east-1"


def datasets() -> list[str]:
    """The datasets of the project: one per contract file in include/contracts/."""
    from include.etl.contract import contract_paths

    return sorted({p.stem for p in contract_paths(PROJECT_ROOT / "include" / "contracts")})


def raw_prefix(dataset: str) -> str:
    return f"raw/{dataset}"


def events_queue(dataset: str) -> str:
    """The SQS queue of a dataset's S3 notifications (one per dataset: a message has one consumer)."""
    return f"{dataset}-raw-events"


@dataclass(frozen=True)
class Ports:
    postgres: int = 55432
    s3: int = 55900
    smtp: int = 55025
    airflow: int = 8080
    dashboard: int = 8501

    @classmethod
    def from_env(cls) -> Ports:
        d = cls()
        return cls(
            postgres=int(os.environ.get("LOCAL_PG_PORT", d.postgres)),
            s3=int(os.environ.get("LOCAL_S3_PORT", d.s3)),
            smtp=int(os.environ.get("LOCAL_SMTP_PORT", d.smtp)),
            airflow=int(os.environ.get("LOCAL_AIRFLOW_PORT", d.airflow)),
            dashboard=int(os.environ.get("LOCAL_DASHBOARD_PORT", d.dashboard)),
        )


@dataclass(frozen=True)
class StackPaths:
    """Where the stack keeps its state (git-ignored)."""

    root: Path

    @property
    def pgdata(self) -> Path:
        return self.root / "pgdata"

    @property
    def pgsocket(self) -> Path:
        return self.root / "pgsocket"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def mailbox(self) -> Path:
        return self.root / "mailbox"

    @property
    def airflow_home(self) -> Path:
        return self.root / "airflow"

    def make(self) -> None:
        for p in (self.root, self.logs, self.pids, self.mailbox, self.airflow_home):
            p.mkdir(parents=True, exist_ok=True)
