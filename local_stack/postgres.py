"""A real PostgreSQL server for the local stack, with its data under `.local/pgdata`.

Uses the machine's PostgreSQL binaries when there are any, else the server that the
`pgserver` wheel ships. initdb refuses to run as root, so as root the server runs as
an unprivileged system user (`postgres`, created if missing).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

from local_stack.config import AIRFLOW_DB, DB_USER, WAREHOUSE_DB, StackPaths
from local_stack.processes import StackError, port_open, wait_for_port

_SERVICE_USER = "postgres"


def find_bin_dir() -> Path:
    """Directory holding initdb/pg_ctl/postgres: PATH, Debian/Homebrew layouts, then pgserver."""
    candidates: list[str] = []
    if shutil.which("pg_ctl") and shutil.which("initdb"):
        candidates.append(str(Path(shutil.which("pg_ctl")).resolve().parent))  # type: ignore[arg-type]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    candidates += sorted(glob.glob("/opt/homebrew/opt/postgresql*/bin") + glob.glob("/usr/local/opt/postgresql*/bin"))
    for c in candidates:
        if (Path(c) / "initdb").exists() and (Path(c) / "postgres").exists():
            return Path(c)
    try:
        import pgserver
    except ImportError:
        raise StackError("no PostgreSQL binaries found: install PostgreSQL or `pip install pgserver`") from None
    return Path(pgserver.__file__).parent / "pginstall" / "bin"


def _as_service_user() -> list[str]:
    """Command prefix that drops root privileges; empty when not root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(_SERVICE_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", _SERVICE_USER], check=True)
    return ["runuser", "-u", _SERVICE_USER, "--"]


def _own(paths: list[Path]) -> None:
    if os.geteuid() == 0:
        user = pwd.getpwnam(_SERVICE_USER)
        for p in paths:
            os.chown(p, user.pw_uid, user.pw_gid)


def start(paths: StackPaths, port: int) -> None:
    """initdb on first use, then start the server on 127.0.0.1:port and create the databases."""
    if port_open(port):
        _ensure_databases(paths, port)
        return
    bin_dir = find_bin_dir()
    prefix = _as_service_user()
    paths.make()
    paths.pgsocket.mkdir(exist_ok=True)
    log = paths.logs / "postgres.log"
    log.touch(mode=0o600)
    log.chmod(0o600)
    if not (paths.pgdata / "PG_VERSION").exists():
        paths.pgdata.mkdir(exist_ok=True)
        _own([paths.pgdata, paths.pgsocket, log])
        os.chmod(paths.pgdata, 0o700)
        subprocess.run(
            [
                *prefix,
                str(bin_dir / "initdb"),
                "-D",
                str(paths.pgdata),
                "-U",
                DB_USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
        )
    _own([paths.pgsocket, log])
    # The root of `.local` must be traversable by the service user.
    for parent in (paths.root, *paths.root.parents):
        if os.geteuid() == 0 and parent.stat().st_mode & 0o001 == 0:
            os.chmod(parent, parent.stat().st_mode | 0o001)
    options = f"-p {port} -k {paths.pgsocket} -c listen_addresses=127.0.0.1"
    result = subprocess.run(
        [
            *prefix,
            str(bin_dir / "pg_ctl"),
            "-D",
            str(paths.pgdata),
            "-l",
            str(log),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise StackError(f"PostgreSQL did not start:\n{result.stdout}{result.stderr}\n{log.read_text()[-2000:]}")
    wait_for_port(port, 30, "PostgreSQL", log)
    _ensure_databases(paths, port)


def _ensure_databases(paths: StackPaths, port: int) -> None:
    import psycopg

    deadline = time.monotonic() + 30
    while True:
        try:
            conn = psycopg.connect(host="127.0.0.1", port=port, user=DB_USER, dbname="postgres", autocommit=True)
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    with conn:
        existing = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
        for db in (WAREHOUSE_DB, AIRFLOW_DB):
            if db not in existing:
                conn.execute(f'CREATE DATABASE "{db}"')


def stop(paths: StackPaths) -> bool:
    """Stop the server (fast shutdown) if it runs; True if it did."""
    if not (paths.pgdata / "postmaster.pid").exists():
        return False
    result = subprocess.run(
        [*_as_service_user(), str(find_bin_dir() / "pg_ctl"), "-D", str(paths.pgdata), "-m", "fast", "-w", "stop"],
        capture_output=True,
        text=True,
    )
    return result.returncode == 0


def dsn(port: int, dbname: str = WAREHOUSE_DB) -> str:
    return f"postgresql://{DB_USER}@127.0.0.1:{port}/{dbname}"
