"""Fail fast, exit honestly: a dead tracking server, an unwritable results folder and bad audio stop a sweep
with one line and exit status 2 before Ray or any trial starts; `data.on_bad: skip` leaves bad files out."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import ray
import soundfile as sf
import yaml

from platform import cluster, runner, sweep, tracking
from trainables.blocks.data import load_speech, scan_folder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_ray_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster, "running_cluster", lambda: False)
    assert not ray.is_initialized()


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: "), err
    return err


def test_unreachable_tracking_server_fails_in_seconds_before_anything_starts(tmp_path: Path) -> None:
    """Nothing listens on port 9: one line naming the URI, exit 2, within 10 s, no plan printed, no Ray."""
    env = {**os.environ, "RAY_ADDRESS": ""}
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "platform.sweep", "qlora_rank", "--tracking-uri", "http://127.0.0.1:9",
                          "--storage", str(tmp_path / "results")], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env=env)
    elapsed = time.monotonic() - t0
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert elapsed < 10, elapsed
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "http://127.0.0.1:9" in lines[0] and "--tracking-uri" in lines[0], out.stderr
    assert out.stdout == ""  # not even the plan: the check comes first
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def test_a_cluster_address_where_nothing_listens_fails_in_seconds(tmp_path: Path) -> None:
    """ray.init keeps retrying such an address for minutes; the sweep says so in one line within seconds."""
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for address, expected in ((f"127.0.0.1:{port}", "no Ray cluster answers there"), ("somewhere", "expected HOST:PORT")):
        env = {**os.environ, "RAY_ADDRESS": address}
        t0 = time.monotonic()
        out = subprocess.run([sys.executable, "-m", "platform.sweep", "qlora_rank", "--storage", str(tmp_path / "r")],
                             cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
        assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
        assert time.monotonic() - t0 < 15
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: RAY_ADDRESS={address}") and expected in lines[0], lines
        assert out.stdout == ""


def test_a_server_that_answers_passes_and_one_that_refuses_access_fails() -> None:
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        code = 200

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(type(self).code)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_port}"
    try:
        tracking.check_tracking_uri(uri)
        Handler.code = 403
        with pytest.raises(tracking.TrackingUnreachable, match="HTTP 403"):
            tracking.check_tracking_uri(uri)
    finally:
        server.shutdown()


@pytest.mark.parametrize("flag", ["--storage", "--tracking-uri"])
def test_unwritable_storage_or_store_fails_before_anything_starts(flag: str, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    value = str(blocker / "results") if flag == "--storage" else f"sqlite:///{blocker / 'sub' / 'mlflow.db'}"
    assert sweep.main(["qlora_rank", flag, value]) == 2  # not a dry run: it would start Ray next
    line = one_error_line(capsys)
    assert flag in line and str(blocker) in line, line
    assert not ray.is_initialized()


def _wav(path: Path, seconds: float = 0.5) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(path, (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)


@pytest.fixture
def bad_folder(tmp_path: Path) -> Path:
    """Split folders of good utterances, plus two files that are not audio and three without a transcript."""
    root = tmp_path / "speech"
    for split in ("train", "validation", "test"):
        for i in range(4):
            _wav(root / split / f"u{i}.wav")
            (root / split / f"u{i}.txt").write_text(f"hello number {i}")
    for name in ("train/broken.wav", "test/notes.wav"):
        (root / name).write_text("this is text, not audio")
        (root / name).with_suffix(".txt").write_text("a transcript for a file that is not audio")
    for name in ("train/lonely_a.wav", "train/lonely_b.wav", "validation/lonely_c.wav"):
        _wav(root / name)
    return root


def _sweep_file(tmp_path: Path, source: Path, model: Path) -> Path:
    spec = {"method": "qlora", "config": {"model": str(model), "data": {"source": str(source)}},
            "space": {"lora.r": {"type": "choice", "values": [2, 4]}}}
    path = tmp_path / "folder_sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_scan_names_unreadable_and_unlabelled_files(bad_folder: Path) -> None:
    scan = scan_folder(bad_folder)
    assert scan.files == 12 + 2 + 3
    assert sorted(p.name for p, _ in scan.unreadable) == ["broken.wav", "notes.wav"]
    assert all("recogni" in reason.lower() or "format" in reason.lower() for _, reason in scan.unreadable), scan
    assert sorted(p.name for p in scan.unlabelled) == ["lonely_a.wav", "lonely_b.wav", "lonely_c.wav"]
    line = scan.summary(first=2)
    assert "5 of 17 audio files" in line and "2 unreadable" in line and "3 without a transcript" in line
    assert "lonely_a.wav" in line and "(1 more)" in line and "\n" not in line


def test_bad_audio_stops_the_sweep_before_any_trial(bad_folder: Path, tmp_path: Path, tiny_en_dir: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    spec = _sweep_file(tmp_path, bad_folder, tiny_en_dir)
    assert sweep.main([str(spec), "--storage", str(tmp_path / "results"),
                       "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]) == 2
    line = one_error_line(capsys)
    for part in ("data.source", "5 of 17", "broken.wav", "notes.wav", "lonely_a.wav", "data.on_bad: skip"):
        assert part in line, (part, line)
    assert not ray.is_initialized()


def test_on_bad_skip_warns_with_the_count_and_trials_leave_them_out(bad_folder: Path, tmp_path: Path,
                                                                    tiny_en_dir: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    spec = _sweep_file(tmp_path, bad_folder, tiny_en_dir)
    assert sweep.main([str(spec), "--dry-run", "--set", "data.on_bad=skip"]) == 0
    err = capsys.readouterr().err
    assert "warning: data.source:" in err and "5 of 17" in err and "skipping them" in err, err
    # What a trial then loads: the good files only (unlabelled ones were always left out).
    train = load_speech(str(bad_folder), "train", on_bad="skip")
    assert sorted(u["id"] for u in train) == [f"train/u{i}" for i in range(4)]
    with pytest.raises(ValueError, match=r"broken\.wav.*data\.on_bad: skip"):
        load_speech(str(bad_folder), "train")


def test_a_clean_folder_passes_the_scan(tmp_path: Path, tiny_en_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "clean"
    for split in ("train", "validation", "test"):
        for i in range(2):
            _wav(root / split / f"u{i}.wav")
        (root / split / "transcripts.tsv").write_text("u0.wav\thello\nu1\tworld\n")
    assert scan_folder(root).bad == 0
    assert sweep.main([str(_sweep_file(tmp_path, root, tiny_en_dir)), "--dry-run"]) == 0
    assert capsys.readouterr().err == ""


def test_ctrl_c_before_the_trials_exits_130(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(uri: str, timeout_s: float = 5.0) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(tracking, "check_tracking_uri", interrupted)
    assert sweep.main(["qlora_rank", "--dry-run"]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_the_failure_summary_says_how_many_and_why_one_line_each() -> None:
    failed = [{"trial": "name=paged_adamw_8bit", "error": "ConfigError: optim.name: 'paged_adamw_8bit' pages ... CUDA"},
              {"trial": "r=4", "error": ""}]
    text = runner.failure_summary(failed, 5)
    lines = text.splitlines()
    assert lines[0] == "2 of 5 trials failed (exit status 1):"
    assert lines[1] == "  name=paged_adamw_8bit: ConfigError: optim.name: 'paged_adamw_8bit' pages ... CUDA"
    assert lines[2] == "  r=4: no error recorded" and len(lines) == 3
