"""The Optuna study's storage (platform/studies.py) on a real PostgreSQL: drivers that start at once on a new
database, the one-line errors of `--optuna-storage`, and a password that is never kept."""

from __future__ import annotations

import subprocess
import sys

import pytest

from platform import studies
from tests.conftest import ROOT
from tests.postgres import new_database, postgres_server  # noqa: F401 - the fixture

OPEN = "import sys; from platform import studies; studies.create_study(sys.argv[1], sys.argv[2], ['min'])"


def test_drivers_starting_at_once_on_a_new_database_all_get_their_study(postgres_server: str) -> None:  # noqa: F811
    # Without the schema lock, all but one of four drivers creating Optuna's tables at once fail with
    # 'duplicate key value violates unique constraint "pg_type_typname_nsp_index"'.
    url = new_database(postgres_server, "studies_race")
    procs = [subprocess.Popen([sys.executable, "-c", OPEN, url, f"sweep-{i}"], cwd=ROOT, stderr=subprocess.PIPE,
                              text=True) for i in range(4)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [e.strip().splitlines()[-1:] for e in errors]
    import optuna

    names = sorted(s.study_name for s in optuna.get_all_study_summaries(url))
    assert names == [f"sweep-{i}" for i in range(4)]


def test_a_second_create_finds_the_study_it_resumes(postgres_server: str) -> None:  # noqa: F811
    import optuna

    url = new_database(postgres_server, "studies_resume")
    studies.create_study(url, "s", ["min", "max"])
    study = optuna.load_study(study_name="s", storage=url)
    study.tell(study.ask(), [0.1, 3.0])
    studies.create_study(url, "s", ["min", "max"])
    again = optuna.load_study(study_name="s", storage=url)
    assert len(again.trials) == 1 and [d.name for d in again.directions] == ["MINIMIZE", "MAXIMIZE"]


@pytest.mark.parametrize(("url", "says"), [
    ("nonsense", "is not a database URL"),
    ("postgres://u@127.0.0.1/x", "write postgresql://, not postgres://"),
    ("mysql://u@127.0.0.1/x", "its database driver is not installed"),
    ("postgresql://u:hunter2secret@127.0.0.1:1/x", "cannot connect"),
])
def test_bad_urls_fail_in_one_line_without_their_password(url: str, says: str) -> None:
    with pytest.raises(studies.StudyStorageError) as err:
        studies.check(url)
    message = str(err.value)
    assert says in message and "\n" not in message and "hunter2secret" not in message, message


def test_a_wrong_password_a_missing_database_and_mlflows_own_database_are_refused(postgres_server: str) -> None:  # noqa: F811
    from sqlalchemy.engine import make_url

    url = new_database(postgres_server, "studies_refused")
    wrong = make_url(url).set(password="not-the-password").render_as_string(hide_password=False)
    missing = make_url(url).set(database="no_such_db").render_as_string(hide_password=False)
    for bad, says in ((wrong, "password authentication failed"), (missing, 'database "no_such_db" does not exist')):
        with pytest.raises(studies.StudyStorageError, match=says) as err:
            studies.check(bad)
        assert "not-the-password" not in str(err.value)
    # A database MLflow's server keeps its runs in cannot hold studies too: both keep an alembic_version table.
    mlflow_db = new_database(postgres_server, "studies_mlflow")
    from mlflow.tracking import MlflowClient

    MlflowClient(mlflow_db).search_experiments()  # creates MLflow's tables there
    with pytest.raises(studies.StudyStorageError, match="holds MLflow's tracking tables"):
        studies.check(mlflow_db)
    studies.check(url)  # the study's own database is fine


def test_the_sweep_cli_refuses_a_bad_storage_before_any_work(tmp_path) -> None:
    out = subprocess.run([sys.executable, "-m", "platform.sweep", "qlora_rank", "--preset", "local", "--dry-run",
                          "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                          "--optuna-storage", "postgresql://u:hunter2secret@127.0.0.1:1/optuna"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --optuna-storage postgresql://u:***@127.0.0.1:1/optuna: "
                                                   "cannot connect"), out.stderr
    assert "sweep " not in out.stdout  # no plan: nothing was done


def test_a_shown_url_hides_its_password() -> None:
    assert studies.shown("postgresql://u:pw@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert studies.has_hidden_password("postgresql://u:***@h:5432/db")
    assert not studies.has_hidden_password("postgresql://u@h:5432/db")
    assert studies.shown("sqlite:////tmp/x/optuna.db") == "sqlite:////tmp/x/optuna.db"
