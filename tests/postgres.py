"""A throwaway PostgreSQL server for tests and the tracking load benchmark, started with the Debian package's own
`initdb` and `pg_ctl` in a temporary folder, on a free port of 127.0.0.1, with a password login.

Tests take it from the session fixture `postgres_server`: the server SPEECH_SWEEPS_TEST_POSTGRES names (CI starts
one, `.ci/run`), else one started here when the binaries are installed (as the `postgres` user when this runs as
root: PostgreSQL refuses to run as root), else the test is skipped with the reason. Each test makes its own
databases on it (`new_database`).

    python -m tests.postgres start     # prints SPEECH_SWEEPS_TEST_POSTGRES=URL and SPEECH_SWEEPS_TEST_POSTGRES_DIR=DIR
    python -m tests.postgres stop DIR
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ENV_URL = "SPEECH_SWEEPS_TEST_POSTGRES"
"""A PostgreSQL server URL (a superuser's, or a role that may create databases) that tests use instead of
starting their own."""
USER = "sweeps"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bin_dir() -> Path | None:
    """The folder of PostgreSQL's server binaries: beside `initdb` on PATH, else Debian's newest
    /usr/lib/postgresql/VERSION/bin; None when PostgreSQL's server is not installed."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(versions[-1]).parent if versions else None


def _as_owner(owner: str | None) -> list[str]:
    return ["runuser", "-u", owner, "--"] if owner else []


@dataclass
class LocalPostgres:
    """A PostgreSQL server this process started: its data folder, port and password."""

    data: Path
    port: int
    password: str
    owner: str | None = None
    """The user the server runs as when this process is root."""

    @property
    def url(self) -> str:
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        pg_ctl = (bin_dir() or Path("/nonexistent")) / "pg_ctl"
        subprocess.run([*_as_owner(self.owner), str(pg_ctl), "-D", str(self.data / "db"), "-m", "fast", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(self.data, ignore_errors=True)


def start(max_connections: int = 200, durable: bool = False) -> LocalPostgres:
    """initdb a new cluster in a temporary folder and start it on a free port (127.0.0.1 only); raises
    RuntimeError with one line when PostgreSQL is not installed or does not start. Unless `durable`, commits are
    not flushed to disk (fsync off: faster tests, and nothing here must survive a crash)."""
    bins = bin_dir()
    if bins is None:
        raise RuntimeError("PostgreSQL's server is not installed (no initdb; apt-get install postgresql)")
    owner = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        owner = "postgres" if _user_exists("postgres") else "nobody"
    data = Path(tempfile.mkdtemp(prefix="speech-sweeps-pg-"))
    password = secrets.token_hex(12)
    (data / "pw").write_text(password + "\n")
    if owner:
        info = pwd.getpwnam(owner)
        for path in (data, data / "pw"):
            os.chown(path, info.pw_uid, info.pw_gid)
    run_as = _as_owner(owner)
    init = subprocess.run([*run_as, str(bins / "initdb"), "-D", str(data / "db"), "-U", USER, "--pwfile",
                           str(data / "pw"), "--auth", "scram-sha-256", "-E", "UTF8", "--no-sync"],
                          capture_output=True, text=True, timeout=300)
    (data / "pw").unlink()
    if init.returncode != 0:
        shutil.rmtree(data, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {(init.stderr or init.stdout).strip().splitlines()[-1:]}")
    port = free_port()
    options = (f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={data} "
               f"-c max_connections={max_connections}" + ("" if durable else " -c fsync=off -c synchronous_commit=off"))
    server = LocalPostgres(data, port, password, owner)
    up = subprocess.run([*run_as, str(bins / "pg_ctl"), "-D", str(data / "db"), "-l", str(data / "server.log"),
                         "-o", options, "-w", "-t", "120", "start"], capture_output=True, text=True, timeout=180)
    if up.returncode != 0:
        log = (data / "server.log").read_text(errors="replace") if (data / "server.log").exists() else up.stderr
        server.stop()
        raise RuntimeError(f"PostgreSQL did not start: {log.strip().splitlines()[-1:]}")
    return server


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def new_database(server_url: str, name: str) -> str:
    """Create the database `name` (dropped first if it is there) on the server of `server_url`; its URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    con = psycopg.connect(server_url, autocommit=True)
    try:
        with con.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        con.close()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def wait_until_up(url: str, timeout_s: float = 60) -> None:
    import psycopg

    deadline = time.time() + timeout_s
    while True:
        try:
            psycopg.connect(url, connect_timeout=3).close()
            return
        except psycopg.OperationalError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server URL for this test session: SPEECH_SWEEPS_TEST_POSTGRES's, else a throwaway one started
    here; skips the test where neither is possible."""
    given = os.environ.get(ENV_URL)
    if given:
        wait_until_up(given)
        yield given
        return
    if bin_dir() is None:
        pytest.skip(f"no PostgreSQL: {ENV_URL} is unset and initdb is not installed (apt-get install postgresql)")
    server = start()
    try:
        yield server.url
    finally:
        server.stop()


def main(argv: list[str]) -> int:
    if argv[:1] == ["start"]:
        server = start()
        print(f"{ENV_URL}={server.url}\n{ENV_URL}_DIR={server.data}")
        return 0
    if argv[:1] == ["stop"] and len(argv) == 2:
        data = Path(argv[1])
        owner = data.owner() if data.exists() and os.geteuid() == 0 else None
        LocalPostgres(data, 0, "", owner if owner != "root" else None).stop()
        return 0
    print("usage: python -m tests.postgres start | stop DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
