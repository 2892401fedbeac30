"""Start background processes with PID files, wait for their ports, stop them by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO


class StackError(RuntimeError):
    """A local service failed to start or stop."""


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def wait_for_port(port: int, timeout: float, name: str, log: Path | None = None, pid: int | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return
        if pid is not None and not pid_alive(pid):
            break
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
    raise StackError(f"{name} did not open port {port} within {timeout:.0f}s\n{tail}")


def pid_alive(pid: int) -> bool:
    try:  # reap it if it is our own exited child
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child is not alive
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def read_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def start(
    name: str,
    argv: Sequence[str],
    pid_dir: Path,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start argv detached in its own process group; its PID goes to `<pid_dir>/<name>.pid`."""
    pid_file = pid_dir / f"{name}.pid"
    running = read_pid(pid_file)
    if running:
        return running
    log = open_log(log_dir / f"{name}.log")
    proc = subprocess.Popen(
        list(argv),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        start_new_session=True,
        umask=0o077,  # what the services write (logs, task logs, mail) is their owner's only
    )
    log.close()
    pid_file.write_text(str(proc.pid))
    return proc.pid


def open_log(path: Path) -> BinaryIO:
    """A log file for appending that only its owner reads (services print secrets and data into their logs)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.chmod(path, 0o600)
    return os.fdopen(fd, "ab")


def stop(name: str, pid_dir: Path, timeout: float = 20) -> bool:
    """SIGTERM the process group recorded for name, then SIGKILL what is left. True if it ran."""
    pid_file = pid_dir / f"{name}.pid"
    pid = read_pid(pid_file)
    pid_file.unlink(missing_ok=True)
    if pid is None:
        return False
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (pid_alive(pid) or _group_alive(pid)):
        time.sleep(0.1)
    if pid_alive(pid) or _group_alive(pid):
        _signal_group(pid, signal.SIGKILL)
    return True


def kill(name: str, pid_dir: Path) -> int:
    """SIGKILL the process group recorded for name at once (no shutdown); returns its PID (0 if none ran)."""
    pid_file = pid_dir / f"{name}.pid"
    pid = read_pid(pid_file)
    pid_file.unlink(missing_ok=True)
    if pid is None:
        return 0
    _signal_group(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (pid_alive(pid) or _group_alive(pid)):
        time.sleep(0.05)
    return pid


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
