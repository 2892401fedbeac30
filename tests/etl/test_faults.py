"""Which failures are retried: `is_transient` and `describe` (include/etl/faults.py).

A transient fault raises and Airflow retries the task; anything else is recorded against its
file once and the run goes on. Table-driven over the exceptions the pipeline meets (psycopg,
botocore, urllib3, the socket layer), the wrapping it does (`raise X from fault`), and the real
errors a closed port and moto's S3 server over HTTP give.
"""

from __future__ import annotations

import errno
import smtplib
import socket
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import botocore.exceptions as boto
import psycopg
import psycopg.errors as pg
import pytest
import urllib3.exceptions as urllib3_errors
from botocore.config import Config

from include.etl.faults import describe, is_transient
from include.etl.reading import storage
from include.etl.reading.csv_reader import CsvFormatError
from include.etl.reading.storage import ObjectChangedError
from tests.helpers import moto_s3

S3_URL = "https://s3.eu-west-1.amazonaws.com/raw/raw/orders/dt=2026-01-01/a.csv"


def _client_error(code: str, status: int, operation: str = "GetObject") -> boto.ClientError:
    """A ClientError shaped as botocore builds it from an S3 error response."""
    return boto.ClientError(
        {"Error": {"Code": code, "Message": f"{code} message"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        operation,
    )


TRANSIENT: dict[str, Callable[[], BaseException]] = {
    # PostgreSQL: not reachable, restarted, out of connections, or a conflict with another session.
    "pg-operational-connection-refused": lambda: psycopg.OperationalError(
        'connection failed: connection to server at "127.0.0.1", port 5432 failed: Connection refused'
    ),
    "pg-connection-closed": lambda: psycopg.OperationalError("the connection is closed"),
    "pg-connection-failure": lambda: pg.ConnectionFailure("server closed the connection unexpectedly"),
    "pg-admin-shutdown": lambda: pg.AdminShutdown("terminating connection due to administrator command"),
    "pg-crash-shutdown": lambda: pg.CrashShutdown("terminating connection because of crash of another process"),
    "pg-cannot-connect-now": lambda: pg.CannotConnectNow("the database system is starting up"),
    "pg-too-many-connections": lambda: pg.TooManyConnections("sorry, too many clients already"),
    "pg-serialization-failure": lambda: pg.SerializationFailure("could not serialize access"),
    "pg-deadlock": lambda: pg.DeadlockDetected("deadlock detected"),
    "pg-lock-not-available": lambda: pg.LockNotAvailable("canceling statement due to lock timeout"),
    "pg-query-canceled": lambda: pg.QueryCanceled("canceling statement due to statement timeout"),
    # botocore: the network between the worker and S3, after boto3's own retries.
    "boto-endpoint-connection": lambda: boto.EndpointConnectionError(endpoint_url=S3_URL),
    "boto-read-timeout": lambda: boto.ReadTimeoutError(endpoint_url=S3_URL),
    "boto-connect-timeout": lambda: boto.ConnectTimeoutError(endpoint_url=S3_URL),
    "boto-connection-closed": lambda: boto.ConnectionClosedError(endpoint_url=S3_URL),
    "boto-proxy-connection": lambda: boto.ProxyConnectionError(proxy_url="http://proxy:3128", error="refused"),
    "boto-response-streaming": lambda: boto.ResponseStreamingError(error="Connection broken: IncompleteRead"),
    "boto-incomplete-read": lambda: boto.IncompleteReadError(actual_bytes=10, expected_bytes=100),
    # S3 error responses that mean "try again later".
    "s3-slowdown-503": lambda: _client_error("SlowDown", 503),
    "s3-throttling": lambda: _client_error("Throttling", 400),
    "s3-throttling-exception": lambda: _client_error("ThrottlingException", 400),
    "s3-request-throttled": lambda: _client_error("RequestThrottled", 400),
    "s3-request-timeout": lambda: _client_error("RequestTimeout", 400),
    "s3-internal-error-500": lambda: _client_error("InternalError", 500),
    "s3-service-unavailable-503": lambda: _client_error("ServiceUnavailable", 503),
    "s3-head-500": lambda: _client_error("500", 500, "HeadObject"),  # HEAD responses have no body: code = status
    "s3-head-503": lambda: _client_error("503", 503, "HeadObject"),
    "s3-unnamed-502": lambda: _client_error("", 502),
    "s3-unnamed-504": lambda: _client_error("", 504),
    # urllib3 and the socket layer, when a library lets them through unwrapped.
    "urllib3-protocol": lambda: urllib3_errors.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset")),
    "urllib3-read-timeout": lambda: urllib3_errors.ReadTimeoutError(None, S3_URL, "Read timed out."),
    "connection-reset": lambda: ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
    "connection-refused": lambda: ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
    "broken-pipe": lambda: BrokenPipeError(errno.EPIPE, "Broken pipe"),
    "timeout": lambda: TimeoutError("timed out"),
    "oserror-econnreset": lambda: OSError(errno.ECONNRESET, "Connection reset by peer"),
    "oserror-etimedout": lambda: OSError(errno.ETIMEDOUT, "Connection timed out"),
    "oserror-econnaborted": lambda: OSError(errno.ECONNABORTED, "Software caused connection abort"),
}

DETERMINISTIC: dict[str, Callable[[], BaseException]] = {
    # S3 answers that repeat on every try.
    "s3-access-denied-403": lambda: _client_error("AccessDenied", 403),
    "s3-no-such-key-404": lambda: _client_error("NoSuchKey", 404),
    "s3-no-such-bucket-404": lambda: _client_error("NoSuchBucket", 404),
    "s3-head-403": lambda: _client_error("403", 403, "HeadObject"),
    "s3-head-404": lambda: _client_error("404", 404, "HeadObject"),
    "s3-invalid-access-key": lambda: _client_error("InvalidAccessKeyId", 403),
    "s3-precondition-failed": lambda: _client_error("PreconditionFailed", 412),
    "boto-no-credentials": lambda: boto.NoCredentialsError(),
    # Values and statements PostgreSQL refuses.
    "pg-data-error": lambda: psycopg.DataError("invalid input syntax for type integer"),
    "pg-numeric-out-of-range": lambda: pg.NumericValueOutOfRange("numeric field overflow"),
    "pg-invalid-text": lambda: pg.InvalidTextRepresentation('invalid input syntax for type numeric: "x"'),
    "pg-untranslatable": lambda: pg.UntranslatableCharacter("character with byte sequence has no equivalent"),
    "pg-integrity-error": lambda: psycopg.IntegrityError("constraint violated"),
    "pg-unique-violation": lambda: pg.UniqueViolation("duplicate key value violates unique constraint"),
    "pg-not-null-violation": lambda: pg.NotNullViolation("null value in column violates not-null constraint"),
    "pg-programming-error": lambda: psycopg.ProgrammingError("syntax error at or near"),
    "pg-undefined-table": lambda: pg.UndefinedTable('relation "analytics.orders" does not exist'),
    "pg-insufficient-privilege": lambda: pg.InsufficientPrivilege("permission denied for schema analytics"),
    # Everything else: a file the code cannot handle, a bug.
    "value-error": lambda: ValueError("could not convert string to float: 'x'"),
    "key-error": lambda: KeyError("order_id"),
    "type-error": lambda: TypeError("unsupported operand"),
    "zero-division": lambda: ZeroDivisionError("division by zero"),
    "unicode-decode": lambda: UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
    "file-not-found": lambda: FileNotFoundError(errno.ENOENT, "No such file or directory"),
    "disk-full-locally": lambda: OSError(errno.ENOSPC, "No space left on device"),
    "object-changed": lambda: ObjectChangedError("raw/a.csv changed or was deleted after it was listed"),
    "csv-format": lambda: CsvFormatError("cannot parse CSV"),
}


@pytest.mark.parametrize("make", TRANSIENT.values(), ids=TRANSIENT.keys())
def test_transient_faults_are_retried(make: Callable[[], BaseException]) -> None:
    assert is_transient(make()) is True


@pytest.mark.parametrize("make", DETERMINISTIC.values(), ids=DETERMINISTIC.keys())
def test_errors_that_repeat_are_not_retried(make: Callable[[], BaseException]) -> None:
    assert is_transient(make()) is False


# --- chains: what a fault was wrapped in ------------------------------------------------------


def _raised(make: Callable[[], BaseException]) -> BaseException:
    """The exception `make` raises, with the chain Python gave it."""
    try:
        make()
    except BaseException as exc:
        return exc
    raise AssertionError("make() raised nothing")


def _wrap(outer: BaseException, inner: BaseException) -> Callable[[], BaseException]:
    def make() -> BaseException:
        raise outer from inner

    return make


def _nested(*layers: BaseException) -> Callable[[], BaseException]:
    """`layers[0] from layers[1] from layers[2] ...`, outermost first."""

    def make() -> BaseException:
        for inner, outer in zip(layers[::-1], layers[-2::-1], strict=False):
            outer.__cause__ = inner
        raise layers[0]

    return make


def _raised_while_handling(outer: BaseException, inner: BaseException) -> Callable[[], BaseException]:
    def make() -> BaseException:
        try:
            raise inner
        except BaseException:
            raise outer  # noqa: B904 - implicit chaining is what this case is about

    return make


CHAINS: dict[str, tuple[Callable[[], BaseException], bool]] = {
    "runtime-error-from-endpoint-connection": (
        _wrap(RuntimeError("could not list the partition"), boto.EndpointConnectionError(endpoint_url=S3_URL)),
        True,
    ),
    "value-error-from-admin-shutdown": (
        _wrap(ValueError("load failed"), pg.AdminShutdown("terminating connection")),
        True,
    ),
    "three-levels-down-to-slowdown": (
        _nested(RuntimeError("task"), ValueError("group"), _client_error("SlowDown", 503)),
        True,
    ),
    "raised-while-handling-a-reset-connection": (
        _raised_while_handling(RuntimeError("cleanup failed"), ConnectionResetError(errno.ECONNRESET, "reset")),
        True,
    ),
    # The outermost link that says something decides: a refused value stays refused, whatever
    # network error is further down the chain.
    "data-error-from-connection-reset": (
        _wrap(psycopg.DataError("numeric field overflow"), ConnectionResetError(errno.ECONNRESET, "reset")),
        False,
    ),
    "no-such-key-from-read-timeout": (
        _wrap(_client_error("NoSuchKey", 404), boto.ReadTimeoutError(endpoint_url=S3_URL)),
        False,
    ),
    # storage.open_version: the object changed after it was listed (not retried: the version is gone).
    "object-changed-from-precondition-failed": (
        _wrap(ObjectChangedError("a.csv changed"), _client_error("PreconditionFailed", 412)),
        False,
    ),
    "value-error-from-key-error": (_wrap(ValueError("bad"), KeyError("x")), False),
}


@pytest.mark.parametrize(("make", "transient"), CHAINS.values(), ids=CHAINS.keys())
def test_a_wrapped_fault_is_judged_by_its_chain(make: Callable[[], BaseException], transient: bool) -> None:
    assert is_transient(_raised(make)) is transient


def test_a_chain_that_loops_back_on_itself_ends() -> None:
    a, b = ValueError("a"), KeyError("b")
    a.__cause__, b.__cause__ = b, a
    assert is_transient(a) is False
    c, d = ValueError("c"), TimeoutError("d")
    c.__cause__, d.__cause__ = d, c
    assert is_transient(c) is True


# --- classifications that look wrong for a user ------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        pg.ProgramLimitExceeded('index row size 2720 exceeds btree version 4 maximum 2704 for index "orders_pkey"'),
        pg.StatementTooComplex("stack depth limit exceeded"),
    ],
    ids=["program-limit-exceeded", "statement-too-complex"],
)
def test_a_limit_postgresql_refuses_every_time_is_not_retried(exc: BaseException) -> None:
    assert is_transient(exc) is False


@pytest.mark.parametrize(
    "exc",
    [
        smtplib.SMTPServerDisconnected("Connection unexpectedly closed"),
        socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"),
        smtplib.SMTPResponseException(421, b"4.7.0 Try again later"),
        smtplib.SMTPConnectError(451, b"4.3.0 Mail server temporarily rejected message"),
    ],
    ids=["smtp-server-disconnected", "dns-try-again", "smtp-421", "smtp-connect-451"],
)
def test_a_dropped_smtp_connection_is_retried(exc: BaseException) -> None:
    assert is_transient(exc) is True


@pytest.mark.parametrize(
    "exc",
    [
        smtplib.SMTPDataError(554, b"5.7.1 Message rejected"),
        smtplib.SMTPAuthenticationError(535, b"5.7.8 Authentication credentials invalid"),
        socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
    ],
    ids=["smtp-554", "smtp-auth-535", "unknown-host"],
)
def test_a_refusal_by_the_mail_server_or_an_unknown_host_is_not_retried(exc: BaseException) -> None:
    assert is_transient(exc) is False


# --- the real errors: a closed port, moto's S3 server over HTTP --------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_s3_not_reachable_is_transient() -> None:
    client = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{_closed_port()}",
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",  # pragma: allowlist secret (nothing listens there)
        config=Config(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=2, read_timeout=2),
    )
    error = _raised(lambda: client.list_objects_v2(Bucket="raw"))
    assert isinstance(error, boto.EndpointConnectionError)
    assert is_transient(error) is True


def test_postgresql_not_reachable_is_transient() -> None:
    error = _raised(lambda: psycopg.connect(host="127.0.0.1", port=_closed_port(), user="x", connect_timeout=2))
    assert isinstance(error, psycopg.OperationalError)
    assert is_transient(error) is True


@pytest.fixture
def s3() -> Iterator[Any]:
    with moto_s3("raw") as client:
        yield client


def test_s3_answers_that_repeat_are_not_transient(s3: Any) -> None:
    s3.put_object(Bucket="raw", Key="raw/a.csv", Body=b"a\n")
    errors = {
        "get-missing-key": _raised(lambda: s3.get_object(Bucket="raw", Key="raw/missing.csv")),
        "head-missing-key": _raised(lambda: s3.head_object(Bucket="raw", Key="raw/missing.csv")),
        "missing-bucket": _raised(lambda: s3.list_objects_v2(Bucket="no-such-bucket")),
        "if-match-failed": _raised(lambda: s3.get_object(Bucket="raw", Key="raw/a.csv", IfMatch='"0123"')),
    }
    assert all(isinstance(e, boto.ClientError) for e in errors.values())
    codes = {name: e.response["Error"]["Code"] for name, e in errors.items()}  # type: ignore[attr-defined]
    assert codes == {
        "get-missing-key": "NoSuchKey",
        "head-missing-key": "404",
        "missing-bucket": "NoSuchBucket",
        "if-match-failed": "PreconditionFailed",
    }
    assert {name: is_transient(e) for name, e in errors.items()} == dict.fromkeys(errors, False)


def test_a_version_overwritten_after_listing_is_not_retried(s3: Any) -> None:
    s3.put_object(Bucket="raw", Key="raw/a.csv", Body=b"v1\n")
    listed = storage.list_partition(s3, "raw", "raw/")[0][0]
    s3.put_object(Bucket="raw", Key="raw/a.csv", Body=b"v2\n")
    error = _raised(lambda: storage.open_version(s3, "raw", listed))
    assert isinstance(error, ObjectChangedError)
    assert is_transient(error) is False


# --- describe -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (ValueError("could not convert 'x'"), "ValueError: could not convert 'x'"),
        (KeyError("order_id"), "KeyError: 'order_id'"),
        (pg.UniqueViolation("duplicate key"), "UniqueViolation: duplicate key"),
        (
            _client_error("AccessDenied", 403),
            "ClientError: An error occurred (AccessDenied) when calling the GetObject operation: AccessDenied message",
        ),
        (RuntimeError(), "RuntimeError:"),
    ],
    ids=["value-error", "key-error", "psycopg", "client-error", "no-message"],
)
def test_describe_names_the_type_and_the_message(exc: BaseException, text: str) -> None:
    assert describe(exc) == text


def test_describe_cuts_long_messages_to_the_limit() -> None:
    long = ValueError("x" * 5000)
    text = describe(long)
    assert len(text) == 2000
    assert text.startswith("ValueError: xxx")
    assert text.endswith("x…")
    short = describe(long, limit=40)
    assert (len(short), short[-1]) == (40, "…")
    exact = ValueError("y" * (100 - len("ValueError: ")))
    assert describe(exact, limit=100) == f"ValueError: {'y' * 88}"  # fits exactly: not cut
