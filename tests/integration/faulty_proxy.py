"""An HTTP proxy on loopback that injects S3 faults in front of the moto server.

Every `every`-th request gets the next fault of the cycle instead of being forwarded:
503 SlowDown (throttling), 500 InternalError, or a stall longer than the client's read
timeout. Bounded: it only ever talks to the given upstream on 127.0.0.1.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = ("throttle", "internal", "stall")
_BODIES = {
    "throttle": (503, b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"),
    "internal": (500, b"<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>"),
}


class FaultyProxy:
    def __init__(self, upstream_port: int, every: int = 3, stall_seconds: float = 3.0) -> None:
        self.upstream_port = upstream_port
        self.every = every
        self.stall_seconds = stall_seconds
        self.injected: Counter[str] = Counter()
        self.forwarded = 0
        self._count = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = proxy._next_fault()
                if fault == "stall":
                    time.sleep(proxy.stall_seconds)
                    self.close_connection = True
                    return
                if fault:
                    status, payload = _BODIES[fault]
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = f"127.0.0.1:{proxy.upstream_port}"
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                self.send_response(response.status)
                for k, v in response.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle  # noqa: N815

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _next_fault(self) -> str | None:
        with self._lock:
            self._count += 1
            if self._count % self.every:
                self.forwarded += 1
                return None
            fault = FAULTS[(self._count // self.every - 1) % len(FAULTS)]
            self.injected[fault] += 1
            return fault

    def __enter__(self) -> FaultyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
