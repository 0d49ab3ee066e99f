"""platform.tracking.MlflowTrials against a real MLflow store (sqlite): what a restarted trial's repeated reports
leave in its run. The trial is a stand-in with the three attributes the callback reads from Ray's Trial."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("mlflow")


def callback(uri: str) -> Any:
    from platform import tracking

    parent = tracking.start_parent(uri, "tracking_test", {"stamp": "t"}, {})
    return tracking.MlflowTrials(uri, "tracking_test", parent, {}, "qlora", {}, {}, flush_wait_s=30)


def steps_of(uri: str, run_id: str, key: str) -> list[int]:
    from platform import tracking

    return sorted(m.step for m in tracking.client(uri).get_metric_history(run_id, key))


def test_a_final_result_reported_again_after_a_restart_logs_only_what_changed(tmp_path: Path) -> None:
    """A trial whose node was lost after it reported its final result is restarted and reports the same result
    again (with `restarts` counted up): the run keeps one point per step for every metric, and the new count."""
    from platform import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cb = callback(uri)
    trial = SimpleNamespace(trial_id="t1", config={"lora.r": 4}, last_result={})
    cb.on_trial_start(0, [], trial)
    cb.on_trial_result(0, [], trial, {"step": 10, "loss": 2.0, "val_wer": 0.5})
    final = {"step": 20, "loss": 1.0, "val_wer": 0.4, "wer": 0.3, "restarts": 0.0}
    cb.on_trial_result(0, [], trial, final)
    cb.on_trial_result(0, [], trial, {"step": 10, "loss": 2.0, "val_wer": 0.5})  # a replayed step: skipped
    cb.on_trial_result(0, [], trial, {**final, "restarts": 1.0})
    assert cb.flush(60)
    rid = cb.runs["t1"]
    assert steps_of(uri, rid, "val_wer") == [10, 20]
    assert steps_of(uri, rid, "wer") == [20]
    assert steps_of(uri, rid, "loss") == [10, 20]
    assert tracking.client(uri).get_run(rid).data.metrics["restarts"] == 1.0

    # A new driver (--resume) finds the run unfinished with its final result logged: the same holds.
    again = tracking.MlflowTrials(uri, "tracking_test", cb.parent, {}, "qlora", {}, {}, flush_wait_s=30)
    again.on_trial_result(0, [], trial, {**final, "restarts": 1.0})
    assert again.flush(60)
    assert again.runs["t1"] == rid
    assert steps_of(uri, rid, "val_wer") == [10, 20] and steps_of(uri, rid, "wer") == [20]


def test_a_run_creation_the_client_gave_up_on_is_found_not_made_twice(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A busy server answers a trial's run creation after the client's timeout, and makes the run a moment later:
    the writer's retry finds that run instead of creating a second one for the trial."""
    import threading

    import requests

    from platform import tracking

    monkeypatch.setattr(tracking, "RETRY_EVERY_S", 0.1)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cb = callback(uri)
    real_create = cb.c.create_run
    calls: list[threading.Timer] = []

    def slow_server_create(*args: Any, **kwargs: Any) -> Any:
        if calls:
            return real_create(*args, **kwargs)
        calls.append(threading.Timer(1.5, real_create, args, kwargs))  # the server gets to it after the timeout
        calls[0].start()
        raise requests.exceptions.ReadTimeout("HTTPConnectionPool: Read timed out. (read timeout=60)")

    monkeypatch.setattr(cb.c, "create_run", slow_server_create)
    trial = SimpleNamespace(trial_id="t1", config={"lora.r": 4}, last_result={})
    cb.on_trial_start(0, [], trial)
    cb.on_trial_result(0, [], trial, {"step": 1, "loss": 2.0})
    assert cb.flush(60)
    c = tracking.client(uri)
    exp = c.get_experiment_by_name("tracking_test").experiment_id
    runs = c.search_runs([exp], filter_string="tags.trial_id = 't1'")
    assert [r.info.run_id for r in runs] == [cb.runs["t1"]]
    assert steps_of(uri, cb.runs["t1"], "loss") == [1]
