"""`make bench`: generate dirty orders, put them in the local S3, and race the load paths.

Every method runs in its own process (peak RSS sampled over its process tree), the
methods interleaved and their order rotated on each repeat, on one PostgreSQL with
default durability settings. Prints a table and writes JSON, Markdown and a PNG chart
to bench-results/ (git-ignored). Numbers are never asserted by tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg

from benchmarks import dag_parse
from benchmarks.methods import table_checksum
from benchmarks.procwatch import PeakRss
from local_stack import airflow, broker, postgres, workers
from local_stack.config import PROJECT_ROOT, ExecutorChoice, Ports
from local_stack.demo.sample_orders import generate_day
from local_stack.stack import LocalStack

DAY = date(2026, 1, 15)
PREFIX = "bench"
DEFAULT_METHODS = ("ours", "dag", "dag_celery", "copy_limit", "to_sql", "insert_rows", "dlt_arrow", "dlt_csv")
# The DAG through Airflow: the LocalExecutor, and the CeleryExecutor with --workers Celery workers.
DAG_METHODS = {"dag": "LocalExecutor", "dag_celery": "CeleryExecutor"}
# dlt's pins conflict with Airflow's: these run in dlt's own venv (make .venv-dlt/.installed).
DLT_METHODS = {"dlt_arrow", "dlt_csv"}
# Methods that load the keyed table from an empty warehouse (its checksum is compared across them).
LOADING_METHODS = {"ours", *DAG_METHODS}
DLT_PYTHON = PROJECT_ROOT / ".venv-dlt" / "bin" / "python"
CLEAN_COLUMNS = (
    "order_id",
    "order_ts",
    "customer_id",
    "product_name",
    "category",
    "quantity",
    "unit_price",
    "region",
    "order_date",
    "total_price",
    "source_key",
    "source_line",
    "source_modified",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pipeline_dags_folder(out: Path) -> Path:
    """A DAG folder holding only the pipelines' DAG file (a link to it).

    `airflow dags test` parses its whole DAG folder before the run, and the project's folder also holds the marts
    DAG, whose parse runs `dbt ls` through Cosmos (2.4 s on a cold cache): the pipeline's run never pays that in a
    deployment (the DAG processor parses each file on its own), nor did the baseline's one-file folder.
    """
    folder = out / "dags"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "pipelines.py"
    if not link.is_symlink():
        link.symlink_to(PROJECT_ROOT / "dags" / "pipelines.py")
    return folder


def _config(stack: LocalStack, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    raw, processed, rejected = f"{PREFIX}/raw/orders", f"{PREFIX}/processed/orders", f"{PREFIX}/rejected/orders"
    airflow_env = {
        **stack.env,
        "AIRFLOW__CORE__DAGS_FOLDER": str(_pipeline_dags_folder(out)),
        "AIRFLOW_VAR_ORDERS_RAW_PREFIX": raw,
        "AIRFLOW_VAR_ORDERS_PROCESSED_PREFIX": processed,
        "AIRFLOW_VAR_ORDERS_REJECTED_PREFIX": rejected,
        "AIRFLOW__CORE__PARALLELISM": str(os.cpu_count() or 2),
        "AIRFLOW_VAR_ORDERS_EVENTS_QUEUE_URL": "",
    }
    # As many task slots in all as the LocalExecutor's parallelism (cores), shared out over the workers.
    executor = _celery(args)
    celery_env = {**airflow_env, **workers.celery_env(stack.ports, executor, os.cpu_count() or 2)}
    return {
        "dsn": postgres.dsn(stack.ports.postgres),
        "s3_port": stack.ports.s3,
        "day": DAY.isoformat(),
        "raw_prefix": raw,
        "processed_prefix": processed,
        "rejected_prefix": rejected,
        "workers": os.cpu_count() or 2,
        "rows_per_file": args.rows // args.files,
        "subset_rows": min(args.subset_rows, args.rows),
        "clean_csv": str(out / "clean.csv"),
        "airflow_env": airflow_env,
        "celery_env": celery_env,
        "celery_workers": executor.workers,
    }


def _celery(args: argparse.Namespace) -> ExecutorChoice:
    return ExecutorChoice.celery(args.workers, max(1, (os.cpu_count() or 2) // args.workers))


def _reset(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS analytics CASCADE")
        conn.execute("DROP SCHEMA IF EXISTS etl CASCADE")


def _quiesce(dsn: str, timeout: float = 120) -> None:
    """Start each method on a quiet server: the previous one's autovacuum done, then a checkpoint."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            busy = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
            if conn.execute(busy).fetchone()[0] == 0:
                break
            time.sleep(0.5)
        conn.execute("CHECKPOINT")


BASE = "@base"  # a method name's suffix: the same method run from the --baseline checkout's code


def _run(method: str, cfg: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    root, name = PROJECT_ROOT, method
    if method.endswith(BASE):  # the baseline's code, on the same servers, data and harness
        root, name = Path(cfg["baseline"]), method.removesuffix(BASE)
        base_env = {"PYTHONPATH": str(root), "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags")}
        cfg = {**cfg, "airflow_env": {**cfg["airflow_env"], **base_env}}
    env = {
        **os.environ,
        "PYTHONPATH": str(root),
        **cfg["airflow_env"],
        "AIRFLOW_CONN_BENCH": json.dumps(
            {
                "conn_type": "postgres",
                "host": "127.0.0.1",
                "port": int(cfg["dsn"].rsplit(":", 1)[1].split("/")[0]),
                "login": "etl",
                "schema": "warehouse",
            }
        ),
    }
    python, module = (
        (str(DLT_PYTHON), "benchmarks.dlt_methods") if method in DLT_METHODS else (sys.executable, "benchmarks.methods")
    )
    proc = subprocess.Popen(
        [python, "-m", module, name, json.dumps({**cfg, **(extra or {})})],
        env=env,
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with PeakRss(proc.pid) as rss:
        out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{err[:1500]}\n...\n{err[-1500:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result.update(method=method, peak_rss_mb=round(rss.peak / 2**20), peak_rss_single_mb=round(rss.peak_single / 2**20))
    if name in LOADING_METHODS:  # one checksum formula for every version of the code: the same table or not
        with psycopg.connect(cfg["dsn"]) as conn:
            result["harness_checksum"] = table_checksum(conn)
    return result


def _seed(stack: LocalStack, args: argparse.Namespace) -> int:
    files = generate_day(DAY, files=args.files, rows_per_file=args.rows // args.files, seed=7)
    s3, size = stack.s3(), 0
    for name, body in files.items():
        s3.put_object(Bucket="raw", Key=f"{PREFIX}/raw/orders/dt={DAY.isoformat()}/{name}", Body=body)
        size += len(body)
    return size


def _prepare_clean_rows(cfg: dict[str, Any]) -> None:
    """The limit's input: the clean, deduplicated rows exactly as the pipeline loads them."""
    _reset(cfg["dsn"])
    _run("ours", cfg)
    with psycopg.connect(cfg["dsn"], autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS bench_source CASCADE")
        conn.execute("CREATE SCHEMA bench_source")
        conn.execute("CREATE TABLE bench_source.orders AS SELECT * FROM analytics.orders")
        with (
            open(cfg["clean_csv"], "wb") as fh,
            conn.cursor().copy(
                f"COPY (SELECT {', '.join(CLEAN_COLUMNS)} FROM analytics.orders) TO STDOUT (FORMAT csv)"
            ) as copy,
        ):
            for chunk in copy:
                fh.write(chunk)


def _table(results: list[dict[str, Any]], methods: list[str]) -> list[dict[str, Any]]:
    rows = []
    by_method = {m: [r for r in results if r["method"] == m] for m in methods}
    limit = (
        statistics.median(r["rows"] / r["seconds"] for r in by_method.get("copy_limit", []))
        if by_method.get("copy_limit")
        else None
    )
    for m, runs in by_method.items():
        if not runs:
            continue
        rate = statistics.median(r["rows"] / r["seconds"] for r in runs)
        rows.append(
            {
                "method": m,
                "unit": runs[0]["unit"],
                "rows": runs[0]["rows"],
                "runs": len(runs),
                "median_seconds": round(statistics.median(r["seconds"] for r in runs), 2),
                "rows_per_s": round(rate),
                "ratio_to_copy": round(rate / limit, 3) if limit else None,
                "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
                "peak_rss_single_mb": max(r["peak_rss_single_mb"] for r in runs),
            }
        )
    return rows


def _markdown(rows: list[dict[str, Any]], machine: str) -> str:
    lines = [
        f"Machine: {machine}",
        "",
        "| method | rows (unit) | median s | rows/s | x bare COPY | peak RSS tree / largest process (MB) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        ratio = f"{r['ratio_to_copy']:.2f}" if r["ratio_to_copy"] is not None else "-"
        lines.append(
            f"| {r['method']} | {r['rows']:,} ({r['unit']}) | {r['median_seconds']} | {r['rows_per_s']:,} | "
            f"{ratio} | {r['peak_rss_mb']} / {r['peak_rss_single_mb']} |"
        )
    return "\n".join(lines) + "\n"


def _chart(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.6 * len(rows) + 1.2))
    ax.barh([r["method"] for r in rows], [r["rows_per_s"] for r in rows], color="#4c72b0")
    for i, r in enumerate(rows):
        ax.text(r["rows_per_s"], i, f" {r['rows_per_s']:,}/s", va="center")
    ax.set_xlabel("rows per second (median)")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


DOCS_START, DOCS_END = "<!-- make bench: start -->", "<!-- make bench: end -->"


def _write_docs(page: Path, md: str, args: argparse.Namespace, machine: str) -> None:
    """The report in place of the page's previous one (history is in git)."""
    text = page.read_text()
    head, _, rest = text.partition(DOCS_START)
    _, _, tail = rest.partition(DOCS_END)
    run = (
        f"Last run {datetime.now(UTC):%Y-%m-%d}, commit {_commit()}, {machine}: "
        f"`{' '.join(sys.argv[1:]) or 'make bench'}` ({args.rows:,} rows in {args.files} files, {args.repeats} "
        "repeats). Timings hold on a quiet machine only.\n"
    )
    page.write_text(f"{head}{DOCS_START}\n{run}{md}\n{DOCS_END}{tail}")
    print(f"wrote the report into {page}")


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=2_000_000, help="raw rows in all (default 2,000,000)")
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--subset-rows", type=int, default=200_000, help="rows for the slow paths (to_sql, insert_rows)"
    )
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    parser.add_argument(
        "--memory-rows",
        default="1000000,10000000",
        help="file sizes (rows) for the transform-memory check; empty to skip",
    )
    parser.add_argument("--workers", type=int, default=2, help="Celery workers of dag_celery (default 2)")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench-results")
    parser.add_argument(
        "--docs",
        type=Path,
        help="also write the report into this page between its `make bench` markers (make bench: docs/performance.md)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a checkout of an earlier commit (git worktree add ../base <commit>): its ours/dag race ours/dag",
    )
    parser.add_argument("--baseline-methods", default="ours,dag", help="the baseline's methods (with --baseline)")
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    args.out.mkdir(parents=True, exist_ok=True)
    stack = LocalStack(args.out / "stack", Ports(_free_port(), _free_port(), _free_port(), _free_port(), _free_port()))
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    try:
        stack.start()
        started = time.monotonic()
        size = _seed(stack, args)
        print(
            f"seeded {args.rows:,} raw rows in {args.files} files ({size / 1e6:.0f} MB) "
            f"in {time.monotonic() - started:.0f}s",
            flush=True,
        )
        cfg = _config(stack, args, args.out)
        if args.baseline:
            cfg["baseline"] = str(args.baseline.resolve())
            methods += [m + BASE for m in args.baseline_methods.split(",") if m]
        if DAG_METHODS.keys() & {m.removesuffix(BASE) for m in methods}:  # `dags test --use-executor`: tasks
            # run through the execution API
            airflow.start_services(stack.paths, stack.ports, cfg["airflow_env"], services=("api-server",))
        if "dag_celery" in methods:  # the broker and the workers; `dags test` is the scheduler's stand-in
            broker.start(stack.paths, stack.ports.redis)
            workers.start(stack.paths, cfg["celery_env"], _celery(args))
        _prepare_clean_rows(cfg)
        results = []
        for repeat in range(args.repeats):
            order = methods[repeat % len(methods) :] + methods[: repeat % len(methods)]
            for method in order:
                if method.removesuffix(BASE) in LOADING_METHODS:
                    _reset(cfg["dsn"])
                _quiesce(cfg["dsn"])
                result = _run(method, cfg)
                results.append(result)
                print(
                    f"  run {repeat + 1} {method:12} {result['rows'] / result['seconds']:>10,.0f} rows/s "
                    f"({result['seconds']:.1f}s, peak RSS {result['peak_rss_mb']} MB)",
                    flush=True,
                )
        memory = _memory(stack, cfg, args)
        parse = dag_parse.measure(stack.env, repeats=max(3, args.repeats))
        table = _table(results, methods)
        orchestration = _orchestration(results)
        baseline_orchestration = _orchestration(results, BASE)
        report = {
            "machine": machine,
            "rows": args.rows,
            "files": args.files,
            "raw_mb": round(size / 1e6),
            "repeats": args.repeats,
            "table": table,
            "runs": results,
            "transform_memory": memory,
            "dag_parse": parse,
            "orchestration": orchestration,
            "baseline_orchestration": baseline_orchestration,
        }
        (args.out / "bench.json").write_text(json.dumps(report, indent=2))
        md = (
            _markdown(table, machine)
            + _profile_markdown(results)
            + _checksum_markdown(results)
            + _memory_markdown(memory)
            + dag_parse.markdown(parse)
            + _orchestration_markdown(orchestration)
            + _orchestration_markdown(baseline_orchestration)
        )
        (args.out / "bench.md").write_text(md)
        if args.docs:
            _write_docs(args.docs, md, args, machine)
        _chart(table, args.out / "bench.png")
        print("\n" + md)
        print(f"wrote {args.out}/bench.json, bench.md, bench.png")
    finally:
        stack.stop()  # every Airflow service, Celery worker and Redis too
    return 0


def _memory(stack: LocalStack, cfg: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Peak RSS of the transform alone on one file of each size (streamed: bounded by the batch size)."""
    sizes = [int(n) for n in args.memory_rows.split(",") if n]
    if not sizes:
        return []
    chunk = generate_day(DAY, files=1, rows_per_file=min(sizes), seed=11)
    body = next(iter(chunk.values()))
    header, _, rows = body.partition(b"\n")
    # The same rows with every 10th one malformed (an extra field): rejected in place, in bounded memory.
    lines = rows.split(b"\n")
    malformed = b"\n".join(line + b",extra" if i % 10 == 5 and line else line for i, line in enumerate(lines))
    out = []
    for n in sizes:
        for kind, text in (("clean", rows), ("10% malformed", malformed)):
            name = f"memory_{n}_{kind[:2]}.csv"
            data = header + b"\n" + text * (n // min(sizes))
            key = f"{cfg['raw_prefix']}/dt={DAY.isoformat()}/{name}"
            stack.s3().put_object(Bucket="raw", Key=key, Body=data)
            size_mb = round(len(data) / 2**20)
            del data
            result = _run("transform_memory", cfg, {"file": name})
            out.append(
                {
                    "rows": result["rows"],
                    "kind": kind,
                    "size_mb": size_mb,
                    "seconds": round(result["seconds"], 1),
                    "peak_rss_mb": result["peak_rss_mb"],
                }
            )
            print(
                f"  transform of one {result['rows']:,}-row file ({kind}, {size_mb} MB): "
                f"peak RSS {result['peak_rss_mb']} MB ({result['seconds']:.1f}s)",
                flush=True,
            )
            stack.s3().delete_object(Bucket="raw", Key=key)
    return out


def _profile_markdown(results: list[dict[str, Any]]) -> str:
    """Where `ours` spends its time (medians over its runs)."""
    ours = [r for r in results if r["method"] == "ours"]
    if not ours:
        return ""

    def median(get: Any) -> float:
        return round(statistics.median(get(r) for r in ours), 2)

    names = ("stage", "dedup", "merge")
    phases = {p: median(lambda r, p=p: r["load_phase_seconds"].get(p, 0)) for p in names}
    rest = median(lambda r: r["load_seconds"] - sum(r["load_phase_seconds"].get(p, 0) for p in names))
    return (
        f"\n`ours` (medians): transform {median(lambda r: r['transform_seconds'])} s in {os.cpu_count()} processes; "
        f"load {median(lambda r: r['load_seconds'])} s: COPY into staging {phases['stage']} s, "
        f"dedup {phases['dedup']} s, merge {phases['merge']} s, the rest (tables, lock, ledger, commit) {rest} s\n"
    )


def _checksum_markdown(results: list[dict[str, Any]]) -> str:
    """The loaded table's checksum per method: any change to the pipeline's code must keep it."""
    lines = []
    for method in dict.fromkeys(r["method"] for r in results if r.get("harness_checksum")):
        sums = sorted({r["harness_checksum"] for r in results if r["method"] == method and r.get("harness_checksum")})
        runs = sum(1 for r in results if r["method"] == method and r.get("harness_checksum"))
        lines.append(f"`{method}`: {', '.join(sums)} ({runs} runs)")
    if not lines:
        return ""
    return (
        "\nTable checksum (md5 of every column but load and upload times, in key order):\n\n"
        + "\n".join(f"- {line}" for line in lines)
        + "\n"
    )


def _orchestration(results: list[dict[str, Any]], suffix: str = "") -> dict[str, Any]:
    """What Airflow adds, per executor: the DAG against `ours` per file, the no-op run, and each task's times.

    `suffix` picks one version of the code: "" this checkout's, BASE the --baseline checkout's.
    """
    ours = [r for r in results if r["method"] == "ours" + suffix]
    out: dict[str, Any] = {}
    for name, executor in DAG_METHODS.items():
        method = name + suffix
        dag = [r for r in results if r["method"] == method]
        if not dag:
            continue
        median_run = sorted(dag, key=lambda r: r["seconds"])[len(dag) // 2]
        o: dict[str, Any] = {
            "executor": executor,
            "runs": len(dag),
            "files": median_run["files"],
            "dag_seconds": round(statistics.median(r["seconds"] for r in dag), 2),
            "noop_seconds": round(statistics.median(r["noop_seconds"] for r in dag), 2),
            "tasks": median_run["tasks"],
            "noop_tasks": median_run["noop_tasks"],
            "transforms_per_host": median_run.get("transforms_per_host", {}),
        }
        if ours:
            extra = o["dag_seconds"] - statistics.median(r["seconds"] for r in ours)
            o["overhead_per_file_seconds"] = round(extra / max(o["files"], 1), 2)
        out[method] = o
    local, celery = "dag" + suffix, "dag_celery" + suffix
    if local in out and celery in out:
        out["celery_to_local_ratio"] = round(out[celery]["dag_seconds"] / out[local]["dag_seconds"], 2)
    return out


def _orchestration_markdown(orchestration: dict[str, Any]) -> str:
    runs = {m: o for m, o in orchestration.items() if isinstance(o, dict)}
    if not runs:
        return ""
    lines = [
        "",
        "Through the DAG (`airflow dags test --use-executor`; medians):",
        "",
        "| method | executor | files | median s | s per file more than `ours` | no-op run s | transforms per worker |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for method, o in runs.items():
        hosts = ", ".join(f"{h.split('@')[0]}: {n}" for h, n in sorted(o["transforms_per_host"].items())) or "-"
        lines.append(
            f"| {method} | {o['executor']} | {o['files']} | {o['dag_seconds']} | "
            f"{o.get('overhead_per_file_seconds', '-')} | {o['noop_seconds']} | {hosts} |"
        )
    if "celery_to_local_ratio" in orchestration:
        lines += ["", f"CeleryExecutor / LocalExecutor (median DAG seconds): {orchestration['celery_to_local_ratio']}"]

    def seconds(task: dict[str, Any]) -> str:
        if not task:
            return "-"
        return "skipped" if task.get("skipped") == task["instances"] else str(task["median_s"])

    for method, o in runs.items():
        lines += [
            "",
            f"`{method}` ({o['executor']}), per task:",
            "",
            "| task | instances (full run) | median s (full run) | started..ended (s into the full run) "
            "| instances (no-op run) | median s (no-op run) |",
            "| --- | ---: | ---: | --- | ---: | ---: |",
        ]
        by_start = sorted(
            {*o["tasks"], *o["noop_tasks"]}, key=lambda t: (o["tasks"].get(t, {}).get("first_start_s", 1e9), t)
        )
        for t in by_start:
            full, noop = o["tasks"].get(t, {}), o["noop_tasks"].get(t, {})
            span = f"{full['first_start_s']}..{full['last_end_s']}" if "first_start_s" in full else "-"
            lines.append(
                f"| {t} | {full.get('instances', 0)} | {seconds(full)} | {span} "
                f"| {noop.get('instances', 0)} | {seconds(noop)} |"
            )
    return "\n".join(lines) + "\n"


def _memory_markdown(memory: list[dict[str, Any]]) -> str:
    if not memory:
        return ""
    lines = [
        "",
        "| transform of one file | rows | MB | seconds | peak RSS (MB) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {m.get('kind', 'clean')} | {m['rows']:,} | {m.get('size_mb', '')} | {m['seconds']} | {m['peak_rss_mb']} |"
        for m in memory
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
