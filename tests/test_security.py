"""Security rules: no secret reaches MLflow, a trial's artifacts or the report; checkpoints are loaded as
weights only; no remote code runs unless a config asks for it by name; the cluster's dashboard and MLflow
server listen on loopback only."""

from __future__ import annotations

import ast
import os
import re
import secrets
import string
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from trainables.blocks.config import REDACTED, redact, redact_text, secret_name

ROOT = Path(__file__).resolve().parents[1]
CODE_DIRS = ("trainables", "platform", "benchmarks", "docs")


def _python_files() -> list[Path]:
    return [p for d in CODE_DIRS for p in sorted((ROOT / d).rglob("*.py"))]


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)]


def test_every_torch_load_is_weights_only() -> None:
    """A pickle can run code when it is loaded; torch.load must refuse anything but tensors and plain data."""
    found, bad = 0, []
    for path in _python_files():
        for call in _calls(ast.parse(path.read_text(), str(path))):
            func = call.func
            if isinstance(func, ast.Attribute) and func.attr == "load" and getattr(func.value, "id", "") == "torch":
                found += 1
                kw = {k.arg: k.value for k in call.keywords}
                if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                    bad.append(f"{path.relative_to(ROOT)}:{call.lineno}")
    assert found >= 1  # the scan sees the loads there are
    assert not bad, f"torch.load without weights_only=True: {bad}"


def test_no_remote_code_unless_a_config_asks_by_name() -> None:
    """`trust_remote_code` may only be passed a config field of that name (never a constant True)."""
    bad = []
    for path in _python_files():
        for call in _calls(ast.parse(path.read_text(), str(path))):
            for kw in call.keywords:
                if kw.arg != "trust_remote_code":
                    continue
                value = kw.value
                named = isinstance(value, ast.Attribute) and value.attr == "trust_remote_code"
                if not (named or (isinstance(value, ast.Constant) and value.value is False)):
                    bad.append(f"{path.relative_to(ROOT)}:{call.lineno}")
    assert not bad, f"trust_remote_code not taken from a config field of that name: {bad}"


def test_cluster_dashboard_and_mlflow_listen_on_loopback() -> None:
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    commands = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in commands and "0.0.0.0" not in commands, commands
    assert "mlflow server --host 127.0.0.1" in commands, commands


def test_cluster_nodes_start_with_token_authentication_and_nothing_turns_it_off() -> None:
    """Every `ray start` in cluster.yaml runs with RAY_AUTH_MODE=token and every node gets the token;
    no file of the project sets the mode to anything else."""
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    starts = [c for key in ("head_start_ray_commands", "worker_start_ray_commands") for c in config[key]
              if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token ray start" in c for c in starts), starts
    assert config["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"
    sources = [ROOT / "cluster.yaml", ROOT / "setup.sh", *_python_files()]
    off = [str(p.relative_to(ROOT)) for p in sources
           if re.search(r"RAY_AUTH_MODE\W{1,4}(disabled|off)", p.read_text(), re.IGNORECASE)]
    assert not off, off


def test_redaction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_" + "x" * 8 + "Secret123")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")  # AWS's documented example
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false-but-long")  # a name with TOKEN in it, not a secret
    assert secret_name("HF_TOKEN") and secret_name("AWS_SECRET_ACCESS_KEY") and secret_name("api-key")
    assert not secret_name("TOKENIZERS_PARALLELISM") and not secret_name("max_new_tokens")
    config = {"model": "MyOrg/WhisperLargeV3FinetunedClinical2024", "eval": {"max_new_tokens": 96}, "tokenizer": {"eos_token": "<|im_end|>"},
              "data": {"source": "/data/speech/train-clean-100", "hub_config": "hf_AbCdEfGhIjKlMnOpQrStUvWxYz123"},
              "hub": {"token": "anything at all"}, "digest": "0123456789abcdef" * 4,
              "aws": ["wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "q8ZtR2vLw9XkB4mNc7PdJ1sYf6HgT3uAe0KbVxW5"], "note": "uses hf_xxxxxxxxSecret123 inside"}
    out = redact(config)
    assert out["model"] == config["model"] and out["eval"]["max_new_tokens"] == 96
    assert out["tokenizer"]["eos_token"] == "<|im_end|>" and out["digest"] == config["digest"]
    assert out["data"]["source"] == "/data/speech/train-clean-100"
    assert out["data"]["hub_config"] == out["hub"]["token"] == REDACTED  # by its shape; by the field's name
    assert out["aws"] == [REDACTED, REDACTED]  # the environment's secret; a random 40-character key
    assert out["note"] == f"uses {REDACTED} inside"
    assert redact_text("false-but-long") == "false-but-long"


def _token(prefix: str, n: int) -> str:
    alphabet = string.ascii_letters + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(n - 1)) + "7"


@pytest.mark.integration
def test_a_sweep_records_no_secret(tmp_path: Path, tiny_whisper_dir: Path) -> None:
    """HF_TOKEN and AWS_SECRET_ACCESS_KEY in the environment and a token given with --set: none of them in the
    MLflow store, the trials' artifacts, the report, or what the sweep prints."""
    hf, aws, given = _token("hf_", 34), _token("", 40), _token("hf_", 30)
    spec = {
        "method": "qlora", "description": "secrets stay out",
        "config": {"model": str(tiny_whisper_dir), "precision": {"bits": 32}, "eval": {"max_new_tokens": 2},
                   "data": {"source": "espeak-smoke", "max_eval_items": 2, "max_val_items": 2},
                   "optim": {"max_steps": 1, "warmup_steps": 0, "batch_size": 2}},
        "space": {"lora.r": {"type": "grid", "values": [2]}}, "searcher": {"type": "grid"},
        "num_samples": 1, "baseline": False, "resources": {"num_workers": 1, "cpus_per_worker": 1},
    }
    path = tmp_path / "tiny_secrets.yaml"
    path.write_text(yaml.safe_dump(spec))
    artifacts = tmp_path / "mlartifacts"
    env = {**os.environ, "RAY_ADDRESS": "", "HF_TOKEN": hf, "AWS_SECRET_ACCESS_KEY": aws}
    out = subprocess.run(
        [sys.executable, "-m", "platform.sweep", str(path), "--preset", "local", "--set", f"data.hub_config={given}",
         "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--storage", str(tmp_path / "results")],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**env, "MLFLOW_ARTIFACTS_DESTINATION": str(artifacts)})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    from mlflow.tracking import MlflowClient

    c = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = c.get_experiment_by_name("tiny_secrets")
    runs = c.search_runs([exp.experiment_id])
    trial = next(r for r in runs if "trial_id" in r.data.tags)
    assert trial.data.params["data.hub_config"] == REDACTED  # the token-looking --set value
    # The store, and the report and state the sweep writes beside Ray's results (Ray's own tuner.pkl keeps the
    # config it needs to resume a trial: that is Ray's private storage, not a record).
    report_dir = next((tmp_path / "results" / "tiny_secrets").glob("*/sweep.json")).parent
    places = [tmp_path / "mlflow.db", *[p for p in report_dir.iterdir() if p.suffix in (".md", ".html", ".csv", ".json")]]
    for run in runs:  # every artifact of every run, downloaded through MLflow
        places += [p for p in Path(c.download_artifacts(run.info.run_id, "", str(tmp_path / "dl" / run.info.run_id)))
                   .rglob("*") if p.is_file()]
    assert any(p.name == "config.json" for p in places) and any(p.name.startswith("report") for p in places), places
    for place in places:
        data = place.read_bytes()
        for secret in (hf, aws, given):
            assert secret.encode() not in data, (place, secret[:6])
    for secret in (hf, aws, given):
        assert secret not in out.stdout and secret not in out.stderr
