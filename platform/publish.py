"""Publish a finished sweep's report as its docs page: `python -m platform.publish RESULTS_FOLDER`.

A sweep writes its report into its results folder (`ray_results/<sweep>/<time>/`: `sweep.json`, the driver's state;
`report.md`, `summary.md`, `summary.csv` and the report's plots). This reads that folder, and nothing the sweep did
not write, and writes `docs/results/<sweep>.md` (plots copied to `docs/results/<sweep>/`) under a generated header:
the command, the commit and machine it is published from, when the sweep ran and how long it took. A re-run then
updates its page instead of hand-edited prose. The one hand-written part of a page, its findings between
`FINDINGS_START` and `FINDINGS_END`, is kept when the page is regenerated, so regeneration never deletes
interpretation.

A README may show some of a sweep's columns: a block between `<!-- results NAME: COLUMN COLUMN ... -->` and
`<!-- /results -->` is rewritten from the summary table of the sweep NAME being published (its rows, those columns,
and where they came from), so the README's numbers are the published run's, never copied by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCS_RESULTS = ROOT / "docs" / "results"
FINDINGS_START = "<!-- findings -->"
FINDINGS_END = "<!-- /findings -->"
NO_FINDINGS = ("_None written yet. Say here what the tables show and what they cannot show; this part of the page "
               "is kept when it is regenerated._")
README = ROOT / "README.md"
README_BLOCK = re.compile(r"<!-- results (?P<name>[\w.-]+): (?P<columns>[^>]*?) -->\n(?P<body>.*?)<!-- /results -->",
                          re.S)
"""A README block showing columns of a sweep's summary table; publishing that sweep rewrites its body."""
STAMP_FORMAT = "%Y%m%d-%H%M%S"
"""How `platform/runner.py` names a sweep's results folder (the driver's local time when the sweep started)."""


class PublishError(ValueError):
    """A folder or page that cannot be published; the message is one line naming it."""


@dataclass
class SweepResults:
    """What a sweep's results folder says about the sweep."""

    folder: Path
    name: str
    stamp: str
    preset: str
    overrides: dict[str, Any]
    tracking_uri: str
    parent_run_id: str
    report: str
    plots: list[Path]
    commit: str | None = None
    """The commit the sweep ran at (sweep.json; None for a sweep from before the driver recorded it)."""
    machine: str | None = None
    """The machine the sweep's driver ran on, as `machine()` describes it."""


def read_results(folder: Path) -> SweepResults:
    """The sweep's state (`sweep.json`) and report (`report.md`, plots) from its results folder."""
    where = _shown(folder)
    if not folder.is_dir():
        raise PublishError(f"{where}: no such folder (give a sweep's results folder, ray_results/<sweep>/<time>/)")
    state_file, report_file = folder / "sweep.json", folder / "report.md"
    if not state_file.is_file():
        raise PublishError(f"{where}: not a sweep's results folder (no sweep.json; give ray_results/<sweep>/<time>/)")
    try:
        state = json.loads(state_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PublishError(f"{where}/sweep.json: not JSON ({exc})") from None
    missing = [k for k in ("stamp", "preset") if not isinstance(state, dict) or k not in state]
    if missing:
        raise PublishError(f"{where}/sweep.json: no {missing[0]!r}; not a sweep's results folder")
    if not report_file.is_file():
        raise PublishError(f"{where}: the sweep has not written its report.md (still running, or interrupted: "
                           f"finish it with python -m platform.sweep NAME --resume)")
    report = report_file.read_text()
    title = report.splitlines()[0] if report.strip() else ""
    name = title.removeprefix("# ").strip() if title.startswith("# ") else folder.parent.name
    return SweepResults(folder=folder, name=name, stamp=str(state["stamp"]), preset=str(state["preset"]),
                        overrides=dict(state.get("overrides") or {}), tracking_uri=str(state.get("tracking_uri", "")),
                        parent_run_id=str(state.get("parent_run_id", "")), report=report,
                        plots=sorted(folder.glob("*.png")), commit=state.get("commit"), machine=state.get("machine"))


def _shown(path: Path) -> str:
    """`path` relative to the repository root where it is inside it (pages name no one's home folder)."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _set_value(value: Any) -> str:
    """A `--set` value as it would be typed (`platform.spaces` reads it back by the field's type)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def command(results: SweepResults) -> str:
    """The command that reproduces the sweep, as far as `sweep.json` records it: the name, the preset and every
    `--set` value (`--num-samples` and `--max-concurrent` are not recorded there)."""
    parts = ["python", "-m", "platform.sweep", results.name, "--preset", results.preset]
    for key, value in results.overrides.items():
        parts += ["--set", f"{key}={_set_value(value)}"]
    return shlex.join(parts)


def started_at(results: SweepResults) -> float | None:
    """The sweep's start (seconds since the epoch) from its folder's name, or None if it is not a stamp."""
    try:
        return time.mktime(time.strptime(results.stamp, STAMP_FORMAT))
    except ValueError:
        return None


def _store_answers(uri: str) -> bool:
    """Whether the MLflow store at `uri` can be read without creating it or waiting on retries."""
    import urllib.error
    import urllib.request

    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).is_file()  # MLflow would create a missing database
    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5).close()  # noqa: S310 - http(s) only
        except (urllib.error.URLError, OSError):
            return False
        return True
    return False


def recorded_wall_s(results: SweepResults) -> float | None:
    """`sweep_wall_s`, the wall time the sweep logs on its MLflow parent run, where that store can be read."""
    if not results.parent_run_id or not _store_answers(results.tracking_uri):
        return None
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    try:
        from mlflow.tracking import MlflowClient

        return MlflowClient(results.tracking_uri).get_run(results.parent_run_id).data.metrics.get("sweep_wall_s")
    except Exception:  # noqa: BLE001 - a store without this run: the folder's timestamps are used instead
        return None


def wall_time(results: SweepResults) -> str:
    """How long the sweep took and where that figure comes from."""
    seconds = recorded_wall_s(results)
    if seconds is not None:
        return f"{seconds / 60:.1f} min (`sweep_wall_s` on the sweep's MLflow run)"
    start = started_at(results)
    if start is None:
        return "not recorded"
    seconds = (results.folder / "report.md").stat().st_mtime - start
    return (f"about {seconds / 60:.1f} min (from the folder's start stamp to report.md's time; the sweep's MLflow "
            "run, which holds `sweep_wall_s`, could not be read)")


def git_commit(root: Path = ROOT) -> str:
    """The checkout's commit, and whether its tree has changes not committed."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain"], capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"`{head}`" + (", dirty (uncommitted changes)" if dirty else "")


def machine() -> str:
    """This machine: CPU count, GPUs (by nvidia-smi, without importing torch) and platform."""
    import platform as host  # this package re-exports the standard library's platform module

    gpus: list[str] = []
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=20).stdout
            gpus = [line.strip() for line in out.splitlines() if line.strip()]
        except (OSError, subprocess.SubprocessError):
            gpus = []
    gpu = f"{len(gpus)} GPU ({', '.join(sorted(set(gpus)))})" if gpus else "no GPU"
    return f"{os.cpu_count()} CPU cores, {gpu}, {host.platform()}"


def existing_findings(page: Path) -> str | None:
    """The hand-written findings of an existing page (None when it has none); a broken pair of markers is an error,
    never silently dropped."""
    if not page.is_file():
        return None
    text = page.read_text()
    starts, ends = text.count(FINDINGS_START), text.count(FINDINGS_END)
    if starts == ends == 0:
        return None
    if starts != 1 or ends != 1 or text.index(FINDINGS_START) > text.index(FINDINGS_END):
        raise PublishError(f"{_shown(page)}: needs exactly one {FINDINGS_START} ... {FINDINGS_END} pair "
                           f"(found {starts} and {ends}); fix the page so its findings are not lost")
    body = text[text.index(FINDINGS_START) + len(FINDINGS_START):text.index(FINDINGS_END)].strip("\n")
    return body if body.strip() else None


def _split_report(results: SweepResults) -> tuple[str, str]:
    """The report's introduction (its description, before the first section) and its sections, with plot links
    pointing into the page's plot folder."""
    lines = results.report.splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    first = next((i for i, line in enumerate(lines) if line.startswith("## ")), len(lines))
    intro, sections = "\n".join(lines[:first]).strip(), "\n".join(lines[first:]).strip()
    plots = {p.name for p in results.plots}
    sections = re.sub(r"!\[([^\]]*)\]\(([^)/]+\.png)\)",
                      lambda m: f"![{m.group(1)}]({results.name}/{m.group(2)})" if m.group(2) in plots else m.group(0),
                      sections)
    return intro, sections


def render(results: SweepResults, findings: str | None, *, commit: str, host: str, published: str) -> str:
    """The page: title, the report's description, the generated header, the findings, the report's sections."""
    intro, sections = _split_report(results)
    start = started_at(results)
    measured = (time.strftime("%Y-%m-%d %H:%M", time.localtime(start)) if start is not None else results.stamp)
    header = [
        ("command", f"`{command(results)}`"),
        ("commit", f"{results.commit}; the sweep ran at it" if results.commit else
         f"{commit}; the checkout this page was published from (the sweep recorded none)"),
        ("machine", f"{results.machine}; the sweep's driver ran on it" if results.machine else
         f"{host}; where this page was published (the sweep recorded none)"),
        ("preset", f"`{results.preset}`"),
        ("measured", f"{measured}, the sweep's start (results folder `{results.stamp}`)"),
        ("wall time", wall_time(results)),
        ("published", published),
    ]
    out = [f"# {results.name}", ""]
    if intro:
        out += [intro, ""]
    out += [f"Generated by `python -m platform.publish {_shown(results.folder)}` from the report the sweep wrote. "
            "Re-run the sweep and publish again to update it; only the Findings section is written by hand, and it "
            "is kept (it may describe an earlier run: check it against the tables).", "",
            "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in header], "",
            "## Findings", "", FINDINGS_START, findings if findings is not None else NO_FINDINGS, FINDINGS_END, ""]
    if sections:
        out += [sections, ""]
    return "\n".join(out)


def summary_table(results: SweepResults) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the sweep's summary table (`summary.md`, the untuned model's row included)."""
    path = results.folder / "summary.md"
    if not path.is_file():
        raise PublishError(f"{_shown(path)}: missing; the sweep writes it with its report")
    lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
    if len(lines) < 2:
        raise PublishError(f"{_shown(path)}: no table")
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    return cells[0], cells[2:]


def readme_with_results(text: str, where: str, results: SweepResults, page: Path) -> str:
    """`text` (a README) with every block showing sweep `results.name` rewritten from its summary table."""
    def block(m: re.Match[str]) -> str:
        if m.group("name") != results.name:
            return m.group(0)
        header, rows = summary_table(results)
        columns = m.group("columns").split()
        missing = [c for c in columns if c not in header]
        if missing or not columns:
            raise PublishError(f"{where}: the results block for {results.name} names column "
                               f"{missing[0] if missing else '(none)'!r}, which its summary table lacks "
                               f"(it has {', '.join(header)})")
        index = [header.index(c) for c in columns]
        table = [f"| {' | '.join(columns)} |", f"|{'---|' * len(columns)}",
                 *[f"| {' | '.join(row[i] for i in index)} |" for row in rows]]
        source = (f"_From the sweep run `{results.stamp}` ({results.preset} preset), generated by "
                  f"`python -m platform.publish`; all its columns and plots: [{page.stem}]({page.as_posix()})._")
        return f"<!-- results {results.name}: {m.group('columns')} -->\n" + "\n".join(table) + f"\n\n{source}\n<!-- /results -->"

    return README_BLOCK.sub(block, text)


def publish(folder: Path, docs: Path = DOCS_RESULTS, readme: Path | None = None) -> Path:
    """Write `docs/<sweep>.md` and `docs/<sweep>/*.png` from the results folder, and rewrite `readme`'s blocks
    that show this sweep; returns the page's path."""
    results = read_results(folder)
    page = docs / f"{results.name}.md"
    findings = existing_findings(page)  # read (and checked) before anything is written
    text = render(results, findings, commit=git_commit(), host=machine(), published=time.strftime("%Y-%m-%d"))
    readme_text = None
    if readme is not None and readme.is_file():  # checked before anything is written, like the findings
        link = Path(os.path.relpath(page, readme.parent))
        readme_text = readme_with_results(readme.read_text(), _shown(readme), results, link)
    plot_dir = docs / results.name
    if plot_dir.is_dir():
        for old in plot_dir.glob("*.png"):  # an earlier run's plots that this one may not have
            old.unlink()
    if results.plots:
        plot_dir.mkdir(parents=True, exist_ok=True)
        for png in results.plots:
            shutil.copy2(png, plot_dir / png.name)
    docs.mkdir(parents=True, exist_ok=True)
    page.write_text(text)
    if readme_text is not None and readme is not None and readme_text != readme.read_text():
        readme.write_text(readme_text)
    return page


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m platform.publish",
                                description="Write a finished sweep's docs page from the report in its results folder.")
    p.add_argument("folder", type=Path, help="the sweep's results folder, ray_results/<sweep>/<time>/")
    p.add_argument("--docs", type=Path, default=DOCS_RESULTS, help="where the pages go (default: docs/results)")
    p.add_argument("--readme", type=Path, default=None,
                   help="the README whose results blocks for this sweep are rewritten (default: the project's "
                        "README.md when the pages go to docs/results, none otherwise)")
    args = p.parse_args(argv)
    readme = args.readme or (README if args.docs.resolve() == DOCS_RESULTS else None)
    try:
        page = publish(args.folder, args.docs, readme)
    except PublishError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {_shown(page)} (plots in {_shown(page.with_suffix(''))}/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
