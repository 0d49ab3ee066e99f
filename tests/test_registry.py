"""From a trial to a served model: `platform.export RUN --register NAME` logs the trial's result as an MLflow model
in the trial's run and registers it, `mlflow models serve` answers a transcription request over HTTP with the
recogniser's own transcript, and the registered version links back to its trial; the one-line errors."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
import torch

from platform import export as export_cli
from platform import registry
from tests.browser import BIN, free_port
from tests.conftest import ROOT
from tests.test_inference import DATA, finished
from trainables import dqlora
from trainables.assets.cache import CACHE_ENV
from trainables.blocks.audio import SAMPLE_RATE, decode_audio
from trainables.blocks.data import load_speech

NAME = "tiny_served"
CPU = torch.device("cpu")


def new_store(tmp: Path) -> tuple[str, Any, str]:
    """An MLflow store under `tmp` with the sweep's experiment: (uri, client, experiment id)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    c = MlflowClient(uri)
    exp = c.create_experiment(NAME, artifact_location=(tmp / "artifacts").as_uri())
    return uri, c, exp


def sweep_parent(c: Any, exp: str) -> str:
    return c.create_run(exp, run_name=f"{NAME}-parent", tags={
        "sweep": NAME, "method": "dqlora", "objectives": json.dumps([["val_wer"], ["min"]])}).info.run_id


@pytest.fixture(scope="module")
def trial(tmp_path_factory: pytest.TempPathFactory, tiny_whisper_dir: Path) -> dict[str, Any]:
    """A tiny DQLoRA trial (a random 2-layer Whisper encoder in NF4 + rank-4 LoRA + a character CTC head, two steps:
    unlike a tiny random seq2seq model it spells something) recorded as `platform.sweep`'s callback records one: a
    finished child run of a sweep's parent run, with its metrics at its last step and its artifact folder."""
    from platform import tracking

    tmp = tmp_path_factory.mktemp("registry")
    artifacts = finished(dqlora, {"student": str(tiny_whisper_dir), "precision": {"bits": 4}, "lora": {"r": 4, "dropout": 0.0},
                                  "kd": {"lambda_": 0.0}, "data": {**DATA, "encoder_window_s": 4.0},
                                  "optim": {"max_steps": 2, "warmup_steps": 1, "batch_size": 4}})
    uri, c, exp = new_store(tmp)
    parent = sweep_parent(c, exp)
    run_id = c.create_run(exp, run_name="r=4", tags={"sweep": NAME, "method": "dqlora", "trial_id": "tiny_0001",
                                                     "mlflow.parentRunId": parent}).info.run_id
    metrics = json.loads((artifacts / "metrics.json").read_text())
    tracking.log_metrics(c, run_id, tracking.numeric_metrics(metrics), step=2)
    c.log_artifacts(run_id, str(artifacts))
    c.set_terminated(run_id, "FINISHED")
    c.set_terminated(parent, "FINISHED")
    return {"tmp": tmp, "uri": uri, "client": c, "experiment": exp, "parent": parent, "run_id": run_id,
            "artifacts": artifacts}


@contextlib.contextmanager
def model_server(model_uri: str, env: dict[str, str], log: Path, timeout_s: float = 300) -> Iterator[str]:
    """`mlflow models serve` on loopback, from the repository root, until the body is done; yields its base URL
    once /ping answers. It runs in its own process group, which is always ended."""
    port = free_port()
    cmd = [str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local", "-p", str(port),
           "--host", "127.0.0.1"]
    base = f"http://127.0.0.1:{port}"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.time() + timeout_s
            while True:
                try:
                    urllib.request.urlopen(f"{base}/ping", timeout=2)
                    break
                except OSError:
                    if proc.poll() is not None or time.time() > deadline:
                        raise RuntimeError(f"mlflow models serve did not come up: {log.read_text()[-3000:]}") from None
                    time.sleep(1)
            yield base
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=20)


def wav_bytes(audio: Any) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.mark.integration
def test_a_registered_trial_is_served_and_links_back_to_it(trial: dict[str, Any], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    c, run_id, uri = trial["client"], trial["run_id"], trial["uri"]
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    before = c.get_run(run_id).info
    assert export_cli.main([run_id, "--register", NAME, "--tracking-uri", uri]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith(f"models:/{NAME}/1: serve it with")

    # The version links back to its trial: its source run, the logged model's run, its tags and description.
    version = c.get_model_version(NAME, "1")
    run = c.get_run(run_id)
    assert version.run_id == run_id and version.source.startswith("models:/m-")
    assert c.get_logged_model(version.source.removeprefix("models:/")).source_run_id == run_id
    link = f"#/experiments/{trial['experiment']}/runs/{run_id}"
    assert version.tags["trial_run_id"] == run_id and version.tags["trial_link"] == link
    assert version.tags["sweep"] == NAME and version.tags["method"] == "dqlora" and version.tags["trial"] == "r=4"
    assert float(version.tags["val_wer"]) == pytest.approx(run.data.metrics["val_wer"], rel=1e-5)
    assert float(version.tags["wer"]) == pytest.approx(run.data.metrics["wer"], rel=1e-5)
    assert link in version.description and f"models:/{NAME}/1" in version.description
    # The trial's run was not restarted: still finished, at the same end time.
    assert (run.info.status, run.info.end_time) == ("FINISHED", before.end_time)

    # The sweep's end registers its best trial (here the only one) as the next version, saying why.
    assert registry.register_best(trial["parent"], NAME, uri) is not None
    best = c.get_model_version(NAME, "2")
    assert best.run_id == run_id and best.tags["selected_by"] == f"best val_wer (min) of sweep run {trial['parent']}"

    # Served from the registry, version 1 transcribes wavs sent over HTTP as the recogniser does.
    utts = load_speech("espeak-smoke", "test", max_items=2)
    wavs = [wav_bytes(u["audio"]) for u in utts]
    expected = dqlora.recogniser(trial["artifacts"], CPU).transcribe([decode_audio(w) for w in wavs])
    assert any(expected)  # a real comparison, not of empty strings
    body = {"dataframe_split": {"columns": ["audio"], "data": [[base64.b64encode(w).decode()] for w in wavs]}}
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, CACHE_ENV: str(tmp_path / "cache"),
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    with model_server(f"models:/{NAME}/1", env, tmp_path / "serve.log") as base:
        request = urllib.request.Request(f"{base}/invocations", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        answer = json.load(urllib.request.urlopen(request, timeout=120))
        bad = urllib.request.Request(f"{base}/invocations", headers={"Content-Type": "application/json"},
                                     data=json.dumps({"dataframe_split": {"columns": ["audio"], "data": [[
                                         base64.b64encode(b"not a sound file").decode()]]}}).encode())
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(bad, timeout=60)
    assert [p["text"] for p in answer["predictions"]] == expected
    assert refused.value.code == 400 and "row 0: unreadable audio" in refused.value.read().decode()


# --------------------------------------------------------------------------- one-line errors


@pytest.fixture
def trial_folder(tmp_path: Path) -> Path:
    """A trial's artifact folder as far as finding it goes (config and method); nothing here loads a model."""
    folder = tmp_path / "trial"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model": "whisper-tiny.en"}))
    (folder / "method.json").write_text(json.dumps({"method": "qlora"}))
    return folder


BAD = {
    "name-with-slash": (["{trial}", "--register", "a/b"], "error: --register 'a/b': a model name cannot hold '/'"),
    "blank-name": (["{trial}", "--register", " "], "error: --register ' ': a model name must be non-empty"),
    "not-a-run": (["not-a-run", "--register", "x"], "error: RUN 'not-a-run': no such folder, and not an MLflow run id"),
    "no-store": (["0123456789abcdef0123456789abcdef", "--register", "x"],
                 "error: RUN 0123456789abcdef0123456789abcdef: no MLflow store at"),
    "folder": (["{trial}", "--register", "x"], "--register needs the trial's MLflow run id (a folder has no run"),
    "nothing-to-do": (["{trial}"], "error: OUT_DIR: name a folder to export to, or register the trial with --register NAME"),
    "adapter-only": (["{trial}", "--adapter-only", "--register", "x"], "error: --adapter-only: exports to OUT_DIR"),
}


@pytest.mark.parametrize(("args", "message"), BAD.values(), ids=BAD.keys())
def test_register_bad_input_is_one_line_and_exit_2(args: list[str], message: str, trial_folder: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'none.db'}")
    assert export_cli.main([a.format(trial=trial_folder) for a in args]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert captured.out == ""
    assert not (tmp_path / "none.db").exists()  # nothing was created to answer


def test_a_sweep_without_a_finished_trial_registers_nothing_and_says_so(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    uri, c, exp = new_store(tmp_path)
    parent = sweep_parent(c, exp)
    assert registry.register_best(parent, NAME, uri) is None
    err = capsys.readouterr().err.strip().splitlines()  # after MLflow's own lines on creating the store
    assert err[-1:] == [f"model registry: the sweep's best trial was not registered: RUN {parent}: sweep {NAME} has no "
                   "finished trial with val_wer"]
    assert c.search_registered_models() == []
    assert registry.register_best(parent, "a:b", uri) is None
    assert "sweep name 'a:b': a model name cannot hold" in capsys.readouterr().err
