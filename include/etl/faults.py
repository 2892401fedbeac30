"""Which failures are worth retrying.

A transient fault (the network, S3 throttling or a 5xx, a database that restarted or is not
reachable yet) may pass: the task raises and Airflow retries it with backoff. Anything else
fails the same way every time it is tried (a file the code cannot handle, a value a database
refuses): retrying only holds the run, so it is recorded against the file once and the run
goes on. boto3 has already retried S3 calls by the time an error gets here (the connection's
`config_kwargs.retries`), so these are the faults that outlasted that.
"""

from __future__ import annotations

import errno
import smtplib
import socket

import botocore.exceptions as boto
import psycopg
import psycopg.errors as pg
import urllib3.exceptions as urllib3_errors

# S3 error codes that mean "try again later".
_TRANSIENT_S3_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "500",
        "502",
        "503",
        "504",
    }
)
_TRANSIENT_BOTO = (
    boto.EndpointConnectionError,
    boto.ConnectionClosedError,
    boto.ConnectTimeoutError,
    boto.ReadTimeoutError,
    boto.ProxyConnectionError,
    boto.ResponseStreamingError,
    boto.IncompleteReadError,
)
_TRANSIENT_PG = (
    pg.AdminShutdown,
    pg.CannotConnectNow,
    pg.CrashShutdown,
    pg.TooManyConnections,
    pg.DeadlockDetected,
    pg.SerializationFailure,
    pg.LockNotAvailable,
    pg.QueryCanceled,
)
_TRANSIENT_ERRNO = frozenset({errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EPIPE})
# SQLSTATE classes of OperationalErrors that repeat on every try: 54, program limit exceeded (an index
# row too big, a statement too complex).
_REPEATING_PG_CLASSES = frozenset({"54"})


def is_transient(exc: BaseException) -> bool:
    """True for faults a retry may get past; False for errors that repeat on every try."""
    for e in _chain(exc):
        if isinstance(e, (*_TRANSIENT_BOTO, urllib3_errors.ProtocolError, urllib3_errors.TimeoutError)):
            return True
        if isinstance(e, boto.ClientError):
            error = e.response.get("Error", {})
            status = str(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            return str(error.get("Code", "")) in _TRANSIENT_S3_CODES or status in _TRANSIENT_S3_CODES
        if isinstance(e, _TRANSIENT_PG):
            return True
        if isinstance(e, psycopg.OperationalError):
            # Connection refused, lost or closed by the server (no SQLSTATE, or class 08, 53, 57...).
            return (e.sqlstate or "")[:2] not in _REPEATING_PG_CLASSES
        if isinstance(e, psycopg.Error):
            return False  # data and constraint errors repeat
        if isinstance(e, (socket.timeout, TimeoutError, ConnectionError, smtplib.SMTPServerDisconnected)):
            return True
        if isinstance(e, smtplib.SMTPConnectError | smtplib.SMTPResponseException):
            return 400 <= e.smtp_code < 500  # 4xx: try again later (421, 450, 451, 452)
        if isinstance(e, socket.gaierror):
            return e.errno == socket.EAI_AGAIN  # a name server that did not answer, not an unknown name
        if isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNO:
            return True
    return False


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and its causes, outermost first."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def describe(exc: BaseException, limit: int = 2000) -> str:
    """`Type: message`, short enough for the ledger and an email."""
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"
