"""Where a sweep's Optuna study lives: an sqlite file beside its results (the default), or a database a team
shares (`--optuna-storage postgresql://...`), reachable from any machine that reaches the database.

The study is created by the sweep driver before any trial starts. Several drivers may start at once on a new
database; Optuna's table creation is not safe against that (two `CREATE TABLE`s of the same table collide in
PostgreSQL's catalogue), so on PostgreSQL the tables are created under an advisory lock.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SQLITE_FILE = "optuna.db"
"""The default study file, in the sweep run's own folder (optuna-dashboard opens it)."""
SCHEMA_LOCK = 0x5EED_0A7A
"""PostgreSQL advisory-lock key held while Optuna creates or checks its tables (locks are per database)."""
CONNECT_TIMEOUT_S = 10


class StudyStorageError(RuntimeError):
    """The study's storage cannot be used; the message is one line naming the URL (its password hidden)."""


def default_url(run_dir: Path) -> str:
    return f"sqlite:///{run_dir / SQLITE_FILE}"


def shown(url: str) -> str:
    """`url` as it can be printed and kept: its password, if any, replaced by ***."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("@", 1)[-1] if "@" in url else url


def has_hidden_password(url: str) -> bool:
    """Whether `url` came from `shown` with a password it no longer has."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).password == "***"
    except ArgumentError:
        return False


def _connect_args(url: str, timeout_s: int = CONNECT_TIMEOUT_S) -> dict[str, Any]:
    """libpq's connect timeout for PostgreSQL through psycopg (3 or 2); nothing for other databases or drivers."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("psycopg", "psycopg2"):
        return {"connect_timeout": timeout_s}
    return {}


def engine_kwargs(url: str) -> dict[str, Any]:
    """SQLAlchemy engine options for a study on `url`.

    Trials never open the study: the sweep driver does, from Tune's one controller thread (a sample when a trial
    starts, a result when it ends), so a study needs one connection at a time however many trials run, and a
    small pool keeps a sweep's share of the server's `max_connections` bounded (at most 4). Trials run for hours:
    a connection is checked before use (a server restart or a firewall that drops idle connections must not
    fail the next trial) and renewed every 30 minutes. sqlite keeps Optuna's defaults.
    """
    if url.startswith("sqlite"):
        return {}
    kwargs: dict[str, Any] = {"pool_size": 2, "max_overflow": 2, "pool_pre_ping": True, "pool_recycle": 1800}
    if _connect_args(url):
        kwargs["connect_args"] = _connect_args(url)
    return kwargs


def _first_line(exc: BaseException, url: str) -> str:
    """The error's first meaningful line (the database's own message where there is one), password removed."""
    from sqlalchemy.engine import make_url

    origin = getattr(exc, "orig", None) or exc
    lines = [x.strip() for x in str(origin).splitlines() if x.strip()]
    line = " ".join((lines[0] if lines else type(exc).__name__).split())
    with contextlib.suppress(Exception):
        password = make_url(url).password
        if password:
            line = line.replace(str(password), "***")
    return line[:300]


@contextlib.contextmanager
def _schema_lock(url: str) -> Iterator[None]:
    """Hold PostgreSQL's advisory lock SCHEMA_LOCK on the study's database (other databases: no lock)."""
    if not url.startswith("postgresql"):
        yield
        return
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=_connect_args(url))
    try:
        with engine.connect() as con:
            con.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": SCHEMA_LOCK})
            con.commit()
            try:
                yield
            finally:
                con.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": SCHEMA_LOCK})
                con.commit()
    finally:
        engine.dispose()


def open_storage(url: str) -> Any:
    """Optuna's RDBStorage on `url`, its tables created (or checked) under the schema lock."""
    import optuna

    with _schema_lock(url):
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url))


def check(url: str) -> None:
    """Fail fast, before any work, when a study cannot be kept at `url`: not a database URL, no driver for it,
    the database does not answer or refuses the login, it holds MLflow's tables (both keep an
    `alembic_version` table, so they cannot share a database), or its Optuna tables are from an incompatible
    Optuna. Creates Optuna's tables in a new database. Raises StudyStorageError (one line)."""
    import sqlalchemy
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError
    from sqlalchemy.pool import NullPool

    where = shown(url)
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except ArgumentError:
        raise StudyStorageError(f"{url!r} is not a database URL (e.g. postgresql://USER@HOST:5432/optuna or "
                                "sqlite:///PATH/optuna.db)") from None
    try:
        engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=_connect_args(url, timeout_s=5))
    except NoSuchModuleError:
        hint = " (write postgresql://, not postgres://)" if parsed.drivername == "postgres" else ""
        raise StudyStorageError(f"{where}: no database dialect {parsed.drivername!r}{hint}") from None
    except ImportError as exc:
        hint = "; install psycopg[binary]" if parsed.get_backend_name() == "postgresql" else ""
        raise StudyStorageError(f"{where}: its database driver is not installed ({exc.name or exc}{hint})") from None
    try:
        with engine.connect():
            tables = set(sqlalchemy.inspect(engine).get_table_names())
    except Exception as exc:  # noqa: BLE001 - every way of failing to connect ends in the same one line
        raise StudyStorageError(f"{where}: cannot connect ({_first_line(exc, url)})") from None
    finally:
        engine.dispose()
    if {"experiments", "runs"} <= tables:
        raise StudyStorageError(f"{where}: that database holds MLflow's tracking tables; give the studies a database "
                                "of their own on the same server (both keep an alembic_version table)")
    try:
        open_storage(url).engine.dispose()
    except Exception as exc:  # noqa: BLE001 - an incompatible schema, a missing permission to create tables
        raise StudyStorageError(f"{where}: cannot keep Optuna's tables there ({_first_line(exc, url)})") from None


def create_study(url: str, name: str, modes: list[str]) -> None:
    """The study `name` on `url` with the sweep's objectives (`min`/`max` each), created unless it is there (a
    resumed sweep finds its own). OptunaSearch then loads it by name."""
    import optuna

    storage = open_storage(url)
    try:
        optuna.create_study(storage=storage, study_name=name, load_if_exists=True,
                            directions=["minimize" if m == "min" else "maximize" for m in modes])
    finally:
        storage.engine.dispose()
