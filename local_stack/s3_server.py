"""The local S3 (and SQS): moto's server, with its objects kept on disk across restarts.

Run as `python -m local_stack.s3_server --port 55900 --state .local/s3`. moto keeps everything in memory; this
server writes every object (its bytes, ETag, LastModified, metadata) to the state folder when it stops and every
few seconds after a change, and puts them back, unchanged, when it starts: after `make down` and `make up` the raw,
processed and rejected objects the ledger names are where it says, as the same versions (same ETag and
LastModified: nothing is loaded again). SQS messages are not kept (a restart's queues start empty; the next run
lists what they would have named).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

SNAPSHOT_EVERY_S = 5.0


def _backend() -> Any:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    return s3_backends[DEFAULT_ACCOUNT_ID]["aws"]


def _objects(backend: Any) -> list[tuple[str, Any]]:
    return [(name, key) for name, bucket in backend.buckets.items() for key in bucket.keys.values()]


def fingerprint(backend: Any) -> str:
    """Changes whenever an object or bucket is added, replaced or removed."""
    digest = hashlib.sha256()
    for name in sorted(backend.buckets):
        digest.update(f"bucket {name}\n".encode())
    for bucket, key in sorted(_objects(backend), key=lambda bk: (bk[0], bk[1].name)):
        digest.update(f"{bucket} {key.name} {key.etag} {key.last_modified.isoformat()}\n".encode("utf-8", "replace"))
    return digest.hexdigest()


class Snapshot:
    """What `save` last wrote: each object's index entry by (bucket, key), so a save writes only the objects
    added or replaced since (their bytes are read once), not every object every few seconds."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], dict[str, Any]] = {}


def save(backend: Any, state: Path, snapshot: Snapshot | None = None) -> int:
    """Write every object to `state` (one file of bytes per object version plus one JSON index); returns how many.

    With `snapshot`, an object already written as the same version (ETag and LastModified) is not read again."""
    known = snapshot or Snapshot()
    blobs = state / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    entries: dict[tuple[str, str], dict[str, Any]] = {}
    for bucket, key in _objects(backend):
        etag, modified = key.etag.strip('"'), key.last_modified.isoformat()
        previous = known.entries.get((bucket, key.name))
        if previous is not None and (previous["etag"], previous["last_modified"]) == (etag, modified):
            entries[bucket, key.name] = previous
            continue
        version = f"{bucket}\0{key.name}\0{etag}\0{modified}".encode("utf-8", "surrogatepass")
        blob = hashlib.sha256(version).hexdigest()
        path = blobs / blob
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(key.value)
            tmp.replace(path)
        entries[bucket, key.name] = {
            "bucket": bucket,
            "key": key.name,
            "blob": blob,
            "etag": etag,
            "last_modified": modified,
            "metadata": dict(key.metadata),
        }
    index = {"buckets": sorted(backend.buckets), "objects": list(entries.values())}
    tmp = state / "objects.json.tmp"
    tmp.write_text(json.dumps(index), encoding="utf-8")
    tmp.replace(state / "objects.json")
    kept = {e["blob"] for e in entries.values()}
    if known.entries:  # the versions replaced or deleted since the last save
        stale = [blobs / e["blob"] for e in known.entries.values() if e["blob"] not in kept]
    else:  # the first save: whatever else the folder holds
        stale = [path for path in blobs.iterdir() if path.name not in kept]
    for path in stale:
        path.unlink(missing_ok=True)
    known.entries = entries
    return len(entries)


def restore(backend: Any, state: Path) -> int:
    """Put back what `save` wrote, as the same versions; returns how many objects."""
    index_path = state / "objects.json"
    if not index_path.exists():
        return 0
    index = json.loads(index_path.read_text(encoding="utf-8"))
    for bucket in index["buckets"]:
        if bucket not in backend.buckets:
            backend.create_bucket(bucket, "us-east-1")
    for entry in index["objects"]:
        value = (state / "blobs" / entry["blob"]).read_bytes()
        key = backend.put_object(entry["bucket"], entry["key"], value, etag=entry["etag"], disable_notification=True)
        key.set_metadata(entry["metadata"], replace=True)
        key.last_modified = datetime.fromisoformat(entry["last_modified"])
    return len(index["objects"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state", type=Path, required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))
    from moto.moto_server.threaded_moto_server import MotoRequestHandler
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    args.state.mkdir(parents=True, exist_ok=True)
    backend = _backend()
    restored = restore(backend, args.state)
    print(f"restored {restored} object(s) from {args.state}", flush=True)
    lock = threading.Lock()
    saved = [fingerprint(backend)]
    written = Snapshot()
    save(backend, args.state, written)  # what was restored: known, so later saves write only what changes

    def snapshot() -> None:
        with lock:
            now = fingerprint(backend)
            if now != saved[0]:
                count = save(backend, args.state, written)
                saved[0] = now
                print(f"saved {count} object(s) to {args.state}", flush=True)

    def every_few_seconds() -> None:
        while True:
            time.sleep(SNAPSHOT_EVERY_S)
            try:
                snapshot()
            except Exception as exc:  # a request changed the store meanwhile: the next round saves it
                print(f"snapshot skipped: {exc!r}", flush=True)

    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)

    def stop(signum: int, frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threading.Thread(target=every_few_seconds, daemon=True).start()
    try:
        server.serve_forever()
    finally:
        snapshot()
    sys.exit(0)


if __name__ == "__main__":
    main()
