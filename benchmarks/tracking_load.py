"""How much one MLflow tracking server on PostgreSQL holds: N concurrent fake trials logging per-step metrics, for
increasing N, until latency or errors climb.

    .venv/bin/python benchmarks/tracking_load.py [--levels 1,2,4,8,16] [--seconds 20] [--warmup 5] [--steps 50]
        [--metrics-per-step 8] [--steps-per-batch 1] [--workers 4] [--pool-size 4] [--max-overflow 8]
        [--postgres URL | --tracking-uri http://HOST:PORT] [--json PATH]
    .venv/bin/python benchmarks/tracking_load.py --levels 1,2 --seconds 5 --steps 2 --workers 1   # what the test runs

The server: with --tracking-uri, the one there (as it is configured); else this script starts `mlflow server`
(--workers, its SQLAlchemy pool from --pool-size and --max-overflow, artifacts proxied into a temporary folder) on
a new database `tracking_load` of the PostgreSQL server at --postgres, or SPEECH_SWEEPS_TEST_POSTGRES, or else a
throwaway PostgreSQL started here, durable like a real one (tests/postgres.py; Debian's package must be installed).
The first line printed says which, with its fsync setting.

A fake trial is one process that does what the sweep driver does for a trial (platform/tracking.py): create a run
with the trial's tags, log its params (60, in one batch), then per step one `log_batch` of --metrics-per-step
metrics (or per --steps-per-batch steps, one of theirs together) and one `log_metric`, then a small artifact and
the run's end; then the next trial, until --seconds have
passed. The MLflow client retries and times out as a sweep's does (2 retries, 15 s). First come --warmup seconds
of load that are not measured (a new server's workers set up their engines on their first requests). At each N the
N fake trials run at once; measured: trials finished per second, metric values accepted per second, requests per
second, each request's latency (p50, p95), failed requests, those among them that waited in vain for a database
connection (the server's "QueuePool limit ... reached", which it answers as 400 BAD_REQUEST), and the most
connections the server held on PostgreSQL.

The server "climbs" at the first N where p95 latency is more than twice the lowest N's, or requests fail, or
metrics per second grow less than 10% over the previous N (the server is saturated; more writers only queue).
Printed: one line per N, then `holds:` (the largest N before the climb) and `climbs at:`; the last line is
`RESULT {json}` with every number (also written to --json).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULT_PREFIX = "RESULT "
EXPERIMENT = "tracking_load"


def ints(text: str) -> list[int]:
    """A comma-separated list of positive integers, sorted and without repeats."""
    values = sorted({int(x) for x in text.split(",") if x.strip()})
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of `values`, nearest rank; nan for none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


# --------------------------------------------------------------------------------------------- the fake trials


def fake_trials(uri: str, experiment_id: str, worker: int, deadline: float, steps: int, per_step: int,
                out: Any, per_batch: int = 1) -> None:
    """One writer: fake trials one after another until `deadline`, `per_batch` steps to a log_batch; puts its
    counts and latencies on `out`."""
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "2"  # as a sweep's driver has them (platform/runner.py)
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "15"
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"  # no "View run" line per finished run
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    stats: dict[str, Any] = {"latencies": [], "metrics": 0, "requests": 0, "errors": 0, "pool_timeouts": 0,
                             "trials": 0, "error": ""}
    artifact = Path(tempfile.mkdtemp()) / "hypotheses.jsonl"
    artifact.write_text("".join(json.dumps({"ref": "a b c", "hyp": "a b d", "i": i}) + "\n" for i in range(200)))

    def call(fn: Any, *args: Any, count: int = 0, **kwargs: Any) -> Any:
        """fn(*args, **kwargs), timed; `count` metric values are accepted when it succeeds."""
        t0 = time.perf_counter()
        try:
            value = fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - a failed write is what is counted
            stats["errors"] += 1
            stats["error"] = stats["error"] or str(exc).splitlines()[0][:200]
            # The server's SQLAlchemy pool had no connection for the request within 30 s (answered as 400 BAD_REQUEST)
            stats["pool_timeouts"] += "QueuePool limit" in str(exc)
            return None
        finally:
            stats["latencies"].append(time.perf_counter() - t0)
            stats["requests"] += 1
        stats["metrics"] += count
        return value

    n = 0
    while time.time() < deadline:
        run = call(c.create_run, experiment_id, run_name=f"w{worker}-t{n}",
                   tags={"sweep": EXPERIMENT, "trial_id": f"w{worker}-t{n}", "method": "fake"})
        n += 1
        if run is None:
            continue
        rid = run.info.run_id
        call(c.log_batch, rid, params=[Param(f"config.p{i}", str(i)) for i in range(60)])
        finished = True
        for first in range(1, steps + 1, per_batch):
            if time.time() >= deadline:
                finished = False
                break
            now, chunk = int(time.time() * 1000), range(first, min(first + per_batch, steps + 1))
            batch = [Metric(f"m{k}", 1.0 / step + k, now, step) for step in chunk for k in range(per_step)]
            call(c.log_batch, rid, metrics=batch, count=len(batch))
            call(c.log_metric, rid, "loss", 2.0 / chunk[-1], step=chunk[-1], count=1)
        if finished:
            call(c.log_artifact, rid, str(artifact))
            call(c.set_terminated, rid, "FINISHED")
            stats["trials"] += 1
        else:
            call(c.set_terminated, rid, "KILLED")  # cut by the deadline: not a finished trial
    shutil.rmtree(artifact.parent, ignore_errors=True)
    out.put(stats)


def run_level(uri: str, experiment_id: str, n: int, seconds: float, steps: int, per_step: int,
              db: tuple[str, str] | None, per_batch: int = 1) -> dict[str, Any]:
    """N fake trials at once for `seconds`; their summed counts, rates and latency percentiles."""
    ctx = mp.get_context("fork")  # mlflow is imported already: forked writers start at once
    out = ctx.Queue()
    deadline = time.time() + seconds
    procs = [ctx.Process(target=fake_trials, args=(uri, experiment_id, i, deadline, steps, per_step, out, per_batch))
             for i in range(n)]
    t0 = time.time()
    for p in procs:
        p.start()
    peak = ConnectionPeak(*db) if db else None
    results = [out.get(timeout=seconds + 300) for _ in procs]
    wall = time.time() - t0
    for p in procs:
        p.join(60)
    connections = peak.stop() if peak else None
    latencies = [x for r in results for x in r["latencies"]]
    level = {
        "n": n, "wall_s": wall,
        "trials_per_s": sum(r["trials"] for r in results) / wall,
        "metrics_per_s": sum(r["metrics"] for r in results) / wall,
        "requests_per_s": sum(r["requests"] for r in results) / wall,
        "p50_ms": 1000 * percentile(latencies, 50), "p95_ms": 1000 * percentile(latencies, 95),
        "errors": sum(r["errors"] for r in results), "db_connections": connections,
        "pool_timeouts": sum(r["pool_timeouts"] for r in results),
        "first_error": next((r["error"] for r in results if r["error"]), ""),
    }
    return level


class ConnectionPeak:
    """The most connections PostgreSQL shows to one database, sampled every 0.2 s in a thread until `stop`."""

    def __init__(self, server_url: str, database: str) -> None:
        import psycopg

        self.con = psycopg.connect(server_url, autocommit=True)
        self.database, self.peak, self.done = database, 0, threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.done.is_set():
            row = self.con.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                                   (self.database,)).fetchone()
            self.peak = max(self.peak, int(row[0]))
            self.done.wait(0.2)

    def stop(self) -> int:
        self.done.set()
        self.thread.join(5)
        self.con.close()
        return self.peak


def climb(levels: list[dict[str, Any]]) -> tuple[int, int | None, str]:
    """(the largest N that holds, the first N that climbs or None, why)."""
    first = levels[0]
    if first["errors"]:
        return 0, first["n"], f"{first['errors']} failed requests already at N={first['n']} ({first['first_error']})"
    for prev, cur in zip(levels, levels[1:], strict=False):
        why = []
        if cur["errors"]:
            why.append(f"{cur['errors']} failed requests ({cur['first_error']})")
        if cur["p95_ms"] > 2 * first["p95_ms"]:
            why.append(f"p95 {cur['p95_ms']:.0f} ms, {cur['p95_ms'] / first['p95_ms']:.1f}x N={first['n']}'s")
        if cur["metrics_per_s"] < 1.1 * prev["metrics_per_s"]:
            why.append(f"metrics/s {cur['metrics_per_s']:.0f} against {prev['metrics_per_s']:.0f} at N={prev['n']}: "
                       "saturated")
        if why:
            return prev["n"], cur["n"], "; ".join(why)
    return levels[-1]["n"], None, f"no climb up to N={levels[-1]['n']}"


# --------------------------------------------------------------------------------------------- the server


def settings(server_url: str) -> str:
    """The PostgreSQL server's version and whether it flushes commits to disk (fsync, synchronous_commit)."""
    import psycopg

    with psycopg.connect(server_url) as con:
        version, fsync, sync = (con.execute(f"SHOW {name}").fetchone()[0]
                                for name in ("server_version", "fsync", "synchronous_commit"))
    return f"{version.split()[0]}, fsync {fsync}, synchronous_commit {sync}"


def start_server(store: str, artifacts: Path, workers: int, pool_size: int, max_overflow: int,
                 log: Path) -> tuple[subprocess.Popen, str]:
    """`mlflow server` on a free port of 127.0.0.1 with its pool set; (the process, its URL) once it answers."""
    sys.path.insert(0, str(ROOT))
    from tests.postgres import free_port

    port = free_port()
    env = {**os.environ, "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": str(pool_size),
           "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": str(max_overflow)}
    with log.open("w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store,
                                 "--serve-artifacts", "--artifacts-destination", str(artifacts), "--host", "127.0.0.1",
                                 "--port", str(port), "--workers", str(workers)],
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2).close()
            return proc, url
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                stop_server(proc)
                tail = log.read_text(errors="replace").strip().splitlines()[-1:]
                raise RuntimeError(f"mlflow server did not start: {tail}") from None
            time.sleep(0.5)


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/tracking_load.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--levels", type=ints, default=[1, 2, 4, 8, 16], help="fake trials at once, one level each")
    p.add_argument("--seconds", type=float, default=20.0, help="seconds per level (default 20)")
    p.add_argument("--warmup", type=float, default=5.0,
                   help="seconds of unmeasured load first, one writer per server worker (default 5; 0: none)")
    p.add_argument("--steps", type=int, default=50, help="steps of one fake trial (default 50)")
    p.add_argument("--metrics-per-step", type=int, default=8, help="metrics each step logs (default 8)")
    p.add_argument("--steps-per-batch", type=int, default=1,
                   help="steps each log_batch carries (default 1: one request per step, as a sweep logs results)")
    p.add_argument("--workers", type=int, default=4, help="the started server's --workers (default 4)")
    p.add_argument("--pool-size", type=int, default=4, help="its MLFLOW_SQLALCHEMYSTORE_POOL_SIZE (default 4)")
    p.add_argument("--max-overflow", type=int, default=8, help="its MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW (default 8)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--postgres", metavar="URL", help="PostgreSQL server to put the started server's database on")
    where.add_argument("--tracking-uri", metavar="URL", help="measure this running server instead of starting one")
    p.add_argument("--json", type=Path, help="also write the RESULT object here")
    args = p.parse_args(argv)
    if args.seconds <= 0 or min(args.steps, args.metrics_per_step, args.steps_per_batch, args.workers,
                                args.pool_size) < 1:
        print("error: --seconds, --steps, --metrics-per-step, --steps-per-batch, --workers and --pool-size must be "
              "positive", file=sys.stderr)
        return 2
    if args.steps_per_batch * args.metrics_per_step > 1000:
        print("error: --steps-per-batch x --metrics-per-step is over 1000, MLflow's limit of metrics in one log_batch",
              file=sys.stderr)
        return 2

    sys.path.insert(0, str(ROOT))
    from mlflow.tracking import MlflowClient  # imported before the writers fork

    from platform.studies import shown
    from tests import postgres

    work = Path(tempfile.mkdtemp(prefix="tracking-load-"))
    server = local_pg = None
    db: tuple[str, str] | None = None
    try:
        if args.tracking_uri:
            uri, described = args.tracking_uri, f"{args.tracking_uri} (as it is configured)"
        else:
            server_url = args.postgres or os.environ.get(postgres.ENV_URL)
            if not server_url:
                local_pg = postgres.start(durable=True)  # commits flushed to disk, as a real server's are
                server_url = local_pg.url
            store = postgres.new_database(server_url, EXPERIMENT)
            db = (server_url, EXPERIMENT)
            server, uri = start_server(store, work / "artifacts", args.workers, args.pool_size, args.max_overflow,
                                       work / "server.log")
            described = (f"{uri} on {shown(store)} (PostgreSQL {settings(server_url)}), {args.workers} workers, "
                         f"pool {args.pool_size} + overflow {args.max_overflow} per engine")
        c = MlflowClient(uri)
        exp = c.get_experiment_by_name(EXPERIMENT)
        experiment_id = exp.experiment_id if exp else c.create_experiment(EXPERIMENT)
        load_before = os.getloadavg()
        print(f"server    {described}", flush=True)
        print(f"machine   {os.cpu_count()} CPUs, load average {load_before[0]:.1f} before the first level", flush=True)
        unit = "step" if args.steps_per_batch == 1 else f"{args.steps_per_batch} steps"
        print(f"load      fake trials of {args.steps} steps; per {unit} one log_batch of "
              f"{args.steps_per_batch * args.metrics_per_step} metrics and one log_metric; {args.seconds:g} s per level",
              flush=True)
        if args.warmup > 0:  # each server worker sets up its engines and caches on its first requests
            run_level(uri, experiment_id, max(1, args.workers), args.warmup, args.steps, args.metrics_per_step, None,
                      args.steps_per_batch)
        levels = []
        for n in args.levels:
            level = run_level(uri, experiment_id, n, args.seconds, args.steps, args.metrics_per_step, db,
                              args.steps_per_batch)
            levels.append(level)
            conns = "" if level["db_connections"] is None else f"  db_connections: {level['db_connections']}"
            print(f"N={n:<3} trials/s: {level['trials_per_s']:.2f}  metrics/s: {level['metrics_per_s']:.1f}  "
                  f"requests/s: {level['requests_per_s']:.1f}  p50_ms: {level['p50_ms']:.1f}  "
                  f"p95_ms: {level['p95_ms']:.1f}  errors: {level['errors']}  pool_timeouts: {level['pool_timeouts']}"
                  f"{conns}", flush=True)
        holds, climbs_at, why = climb(levels)
        best = next((lv for lv in levels if lv["n"] == holds), None)
        if best:
            print(f"holds: {holds} concurrent fake trials ({best['metrics_per_s']:.0f} metrics/s, "
                  f"{best['trials_per_s']:.2f} trials/s, p95 {best['p95_ms']:.0f} ms)", flush=True)
        else:
            print("holds: 0 concurrent fake trials", flush=True)
        print(f"climbs at: {climbs_at if climbs_at is not None else 'none'} ({why})", flush=True)
        result = {"server": described, "levels": levels, "holds": holds, "climbs_at": climbs_at, "why": why,
                  "cpus": os.cpu_count(), "load_before": load_before[0], "load_after": os.getloadavg()[0],
                  "config": {k: v for k, v in vars(args).items() if k not in ("json", "postgres")}}
        print(RESULT_PREFIX + json.dumps(result, default=str), flush=True)
        if args.json:
            args.json.write_text(json.dumps(result, indent=2, default=str))
        return 0
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            stop_server(server)
        if local_pg is not None:
            local_pg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
