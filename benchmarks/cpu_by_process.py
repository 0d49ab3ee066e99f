"""CPU time each process on this machine used over a window: who shares the cores with a training worker.

    .venv/bin/python benchmarks/cpu_by_process.py [SECONDS] [--top N] [--json PATH]

Run it beside a sweep once the trial trains (e.g. a `qlora_rank` trial with `--set optim.max_steps=150`): it
reads every process's user + system CPU time from /proc, waits SECONDS (default 30), reads them again, and prints
the processes that used the most, in CPU-seconds and in cores (CPU-seconds over the window), and the total. The
last line is `RESULT {json}`. Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

RESULT_PREFIX = "RESULT "


def snapshot(proc: Path = Path("/proc")) -> dict[int, tuple[float, str]]:
    """pid -> (CPU seconds used so far, its command line or name), for every process that can be read."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[float, str]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # ended between the listing and the read
            continue
        name, fields = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        out[int(entry.name)] = ((int(fields[11]) + int(fields[12])) / tick, cmd or name)  # utime + stime
    return out


def used(before: dict[int, tuple[float, str]], after: dict[int, tuple[float, str]]) -> list[tuple[float, int, str]]:
    """(CPU seconds used between the snapshots, pid, command) per process alive at the second, most first; a
    process that started in between counts from zero."""
    rows = [(cpu - before.get(pid, (0.0, ""))[0], pid, cmd) for pid, (cpu, cmd) in after.items()]
    return sorted((r for r in rows if r[0] > 0), reverse=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("seconds", nargs="?", type=float, default=30.0)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if args.seconds <= 0:
        p.error(f"seconds: must be positive, got {args.seconds}")
    a, t0 = snapshot(), time.time()
    time.sleep(args.seconds)
    b, window = snapshot(), time.time() - t0
    rows = used(a, b)
    total = sum(r[0] for r in rows)
    print(f"window {window:.1f} s on {os.cpu_count()} cores: all processes {total:.1f} CPU-s ({total / window:.2f} cores)")
    print(f"{'CPU-s':>7}  {'cores':>5}  {'pid':>7}  command")
    for cpu, pid, cmd in rows[:args.top]:
        print(f"{cpu:7.2f}  {cpu / window:5.2f}  {pid:>7}  {cmd[:100]}")
    result = {"window_s": window, "cores": os.cpu_count(), "total_cpu_s": total,
              "processes": [{"pid": pid, "cpu_s": cpu, "command": cmd[:200]} for cpu, pid, cmd in rows[:args.top]]}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
