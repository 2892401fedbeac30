"""Local stack layout and ports: the one place their defaults live.

Override any port with an environment variable (`LOCAL_PG_PORT=6543 make up`), and the state
folder with LOCAL_STATE_DIR (two stacks side by side need both). LOCAL_REDIS_PORT is the Celery
broker's (`make up EXECUTOR=celery`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
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
    from include.etl.contract.model import contract_paths

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
    redis: int = 56379  # the Celery broker (make up EXECUTOR=celery)

    @classmethod
    def from_env(cls) -> Ports:
        d = cls()
        return cls(
            postgres=int(os.environ.get("LOCAL_PG_PORT", d.postgres)),
            s3=int(os.environ.get("LOCAL_S3_PORT", d.s3)),
            smtp=int(os.environ.get("LOCAL_SMTP_PORT", d.smtp)),
            airflow=int(os.environ.get("LOCAL_AIRFLOW_PORT", d.airflow)),
            dashboard=int(os.environ.get("LOCAL_DASHBOARD_PORT", d.dashboard)),
            redis=int(os.environ.get("LOCAL_REDIS_PORT", d.redis)),
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
    def s3_state(self) -> Path:
        """The local S3's objects, kept across restarts (local_stack.s3_server)."""
        return self.root / "s3"

    @property
    def airflow_home(self) -> Path:
        return self.root / "airflow"

    @property
    def redis(self) -> Path:
        return self.root / "redis"

    @property
    def workers(self) -> Path:
        """One scratch folder per Celery worker (its working directory and TMPDIR)."""
        return self.root / "workers"

    @property
    def lineage(self) -> Path:
        """OpenLineage events of every task run on this stack, one JSON event per line."""
        return self.root / "lineage" / "openlineage.jsonl"

    @property
    def executor_file(self) -> Path:
        """Which executor `up` started (read by `down`, `env` and `status`)."""
        return self.root / "executor.json"

    def make(self) -> None:
        for p in (self.root, self.logs, self.pids, self.mailbox, self.airflow_home, self.lineage.parent):
            p.mkdir(parents=True, exist_ok=True)
        # Logs and Airflow's home (its fernet key and the admin's password) are the owner's only (the logs folder
        # stays traversable: PostgreSQL, running as its own user, appends to its log file in it).
        self.logs.chmod(0o711)
        self.airflow_home.chmod(0o700)


EXECUTORS = ("local", "celery")


@dataclass(frozen=True)
class ExecutorChoice:
    """Which executor the stack's Airflow runs: LocalExecutor, or CeleryExecutor with `workers` Celery workers.

    `concurrency` is each worker's task slots (0: the stack's parallelism shared out over the workers).
    """

    kind: str = "local"
    workers: int = 0
    concurrency: int = 0

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, not {self.kind!r}")
        if self.kind == "celery" and self.workers < 1:
            raise ValueError("the celery executor needs at least one worker")

    @classmethod
    def celery(cls, workers: int = 2, concurrency: int = 0) -> ExecutorChoice:
        return cls("celery", workers, concurrency)

    @property
    def is_celery(self) -> bool:
        return self.kind == "celery"

    def save(self, paths: StackPaths) -> None:
        paths.executor_file.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, paths: StackPaths) -> ExecutorChoice:
        """The executor `up` started in this state folder (LocalExecutor when nothing was saved)."""
        try:
            return cls(**json.loads(paths.executor_file.read_text()))
        except (OSError, ValueError, TypeError):
            return cls()
