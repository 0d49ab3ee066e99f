"""The sweep report, rebuilt from MLflow alone: ablation statistics, Pareto front, importances."""

from __future__ import annotations

import json
import random
from pathlib import Path

from mlflow.tracking import MlflowClient

from platform.report import sweep_report


def _child(c: MlflowClient, exp: str, parent: str, name: str, searched: dict, metrics: dict, tmp: Path,
           hyps: list[dict] | None = None, status: str = "FINISHED", early: bool = False,
           natural: list[dict] | None = None) -> None:
    run = c.create_run(exp, run_name=name, tags={"mlflow.parentRunId": parent, "searched": json.dumps(searched),
                                                   **({"stopped_early": "true", "stopped_at_step": "20"} if early else {})})
    for k, v in metrics.items():
        c.log_metric(run.info.run_id, k, v)
    for artifact, rows in (("hypotheses.jsonl", hyps), ("hypotheses_natural.jsonl", natural)):
        if rows is not None:  # under the name a trial gives it, from a folder of this run's own
            folder = tmp / f"art-{name}"
            folder.mkdir(exist_ok=True)
            (folder / artifact).write_text("\n".join(json.dumps(h) for h in rows))
            c.log_artifact(run.info.run_id, str(folder / artifact))
    c.set_terminated(run.info.run_id, status)


def _ablation_sweep(tmp: Path, name: str, factor: str, baseline: str, repeats: int,
                    metric: str) -> tuple[str, MlflowClient, str, str]:
    """(tracking URI, client, experiment id, parent run id) of an ablation sweep's parent run, as the sweep tags it."""
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    c = MlflowClient(uri)
    exp = c.create_experiment(name)
    parent = c.create_run(exp, run_name=name, tags={
        "sweep": name, "searched_keys": json.dumps([factor]), "searcher_type": "grid",
        "ablation": json.dumps({"factor": factor, "baseline": baseline, "repeats": repeats, "seed_key": "seed"}),
        "objectives": json.dumps([[metric], ["min"]])}).info.run_id
    return uri, c, exp, parent


def _hyps(rng: random.Random, error_rate: float, n: int = 150) -> list[dict]:
    rows = []
    for i in range(n):
        words = 10
        errors = sum(rng.random() < error_rate for _ in range(words))
        rows.append({"id": f"u{i:03d}", "reference": "r", "hypothesis": "h", "errors": errors, "ref_words": words})
    return rows


def test_ablation_report_gives_ci_and_p_value(tmp_path: Path) -> None:
    uri, c, exp, parent = _ablation_sweep(tmp_path, "abl", "base", "lora16", 3, "wer")
    rng = random.Random(0)
    for level, rate, seeds in (("lora16", 0.05, 3), ("nf4", 0.055, 3), ("broken", 0.30, 2)):
        for seed in range(seeds):
            hyps = _hyps(rng, rate)
            wer = sum(h["errors"] for h in hyps) / sum(h["ref_words"] for h in hyps)
            ranks = {"lora_rank_min": 2.0 + seed, "lora_rank_max": 12.0, "lora_rank_gini": 0.2} if level == "nf4" else {}
            _child(c, exp, parent, f"{level}-{seed}", {"base": level, "seed": seed},
                   {"wer": wer, "model_size_mb": 10.0 + seed, **ranks}, tmp_path, hyps)
    text = sweep_report(uri, parent, tmp_path / "out")
    tables: dict[str, list[list[str]]] = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| level"):
            cells = [cell.strip() for cell in line.split("|")[1:-1]]
            tables.setdefault(cells[0], []).append(cells)
    # Per level: bootstrap intervals within [0, 1]; the 2-seed level's is over utterances only (†), with its seed range.
    for level in ("lora16", "nf4", "broken"):
        wer = tables[level][0][2]
        mean, low, high = (float(x) for x in wer.replace("[", "").replace("]", "").replace(",", "").split()[:3])
        assert 0.0 <= low <= mean <= high <= 1.0
        assert wer.endswith("†") == (level == "broken")
        seed_min, seed_max = (float(x) for x in tables[level][0][3].split("–"))
        assert seed_min <= mean <= seed_max
    assert tables["nf4"][0][5] == "2–12, 0.200" and tables["lora16"][0][5] == "uniform"  # ranks min–max, Gini
    assert "† fewer than 3 seeds" in text
    # Against the baseline: p-value, the difference with seeds, the MDE and how to read it.
    broken, nf4 = tables["broken"][1], tables["nf4"][1]
    assert float(broken[5]) < 0.05 and broken[8].startswith("worse by")
    mde = float(nf4[7])
    assert 0.005 < mde < 0.1
    if float(nf4[5]) >= 0.05:
        assert nf4[8] == f"no effect larger than {mde:.4f}"
    assert not nf4[6].endswith("†") and broken[6].endswith("†")
    assert (tmp_path / "out" / "ablation_base.png").exists()
    logged = {a.path for a in c.list_artifacts(parent, "report")}
    assert "report/report.md" in logged and "report/ablation_base.png" in logged


def test_ablation_compares_levels_on_the_natural_voice_set_too_where_trials_were_scored_on_one(tmp_path: Path) -> None:
    uri, c, exp, parent = _ablation_sweep(tmp_path, "nat", "mode", "none", 2, "val_wer")
    rng = random.Random(1)
    # "tts" is far better than "none" on the (espeak) test set and far worse on the natural voice.
    for level, test_rate, natural_rate in (("none", 0.30, 0.10), ("tts", 0.05, 0.40)):
        for seed in range(2):
            hyps, natural = _hyps(rng, test_rate), _hyps(rng, natural_rate, n=60)
            _child(c, exp, parent, f"{level}-{seed}", {"mode": level, "seed": seed}, {"val_wer": test_rate}, tmp_path,
                   hyps, natural=natural)
    text = sweep_report(uri, parent, tmp_path / "out")
    test_part, natural_part = text.split("## Ablation of `mode` on the natural-voice test set")
    assert "## Ablation of `mode` (baseline level: `none`)" in test_part and "150 test utterances" in test_part
    assert "60 natural-voice test utterances" in natural_part

    def reading(part: str) -> str:
        return next(line for line in part.splitlines() if line.startswith("| tts |") and "by" in line).split("|")[-2]

    assert reading(test_part).strip().startswith("better by") and reading(natural_part).strip().startswith("worse by")
    assert (tmp_path / "out" / "ablation_mode.png").exists() and (tmp_path / "out" / "ablation_mode_natural.png").exists()


def test_pareto_report_excludes_early_stopped_trials(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = MlflowClient(uri)
    exp = c.create_experiment("par")
    space = {"lora.r": {"type": "choice", "values": [2, 4, 8]}}
    parent = c.create_run(exp, run_name="par", tags={
        "sweep": "par", "searched_keys": json.dumps(["lora.r"]), "searcher_type": "nsga2", "space": json.dumps(space),
        "objectives": json.dumps([["wer", "model_size_mb"], ["min", "min"]])}).info.run_id
    points = [("a", 2, 0.30, 10.0), ("b", 4, 0.20, 20.0), ("c", 8, 0.25, 30.0), ("d", 8, 0.10, 40.0)]
    for name, r, wer, size in points:
        _child(c, exp, parent, name, {"lora.r": r}, {"wer": wer, "model_size_mb": size}, tmp_path)
    # An early-stopped trial that would dominate everything must not appear on the front.
    _child(c, exp, parent, "stopped", {"lora.r": 2}, {"wer": 0.01, "model_size_mb": 1.0}, tmp_path, early=True)
    text = sweep_report(uri, parent, tmp_path / "out")
    front = text.split("## Pareto front")[1].split("##")[0]
    names = [line.split("|")[1].strip() for line in front.splitlines() if line.startswith("| ") and "trial" not in line]
    assert sorted(names) == ["a", "b", "d"]  # c is dominated by b; "stopped" is early-stopped
    assert "Parameter importances" in text
    assert list((tmp_path / "out").glob("pareto_*.png"))


def test_method_metrics_get_columns_only_when_reported() -> None:
    from platform.report_data import COLUMNS
    from platform.report_render import table

    base = {k: 1.0 for k in COLUMNS}
    rows = [{"trial": f"t{i}", "status": "FINISHED", "searched": {"kd.lambda_": lam}, **base, "wer_clean": 0.5 + i,
             "wer_noisy": 0.7, "kd_loss": float("nan") if lam == 0 else 0.25} for i, lam in enumerate((0.0, 1.0))]
    header, _, first, second = table(rows, ["kd.lambda_"], {}).splitlines()
    assert [h.strip() for h in header.split("|")[-4:-1]] == ["wer_clean", "wer_noisy", "kd_loss"]
    assert [c.strip() for c in second.split("|")[-4:-1]] == ["1.5000", "0.7000", "0.2500"]
    assert "wer_clean" not in table([{**r, "wer_clean": None, "wer_noisy": None, "kd_loss": None} for r in rows],
                                    ["kd.lambda_"], {})


def test_plot_lines_never_join_trials_from_different_grid_rows() -> None:
    from platform.report_plots import lines_by_other_keys

    rows = [{"searched": {"lam": lam, "snr": snr, "fixed": 1}, "wer": lam + snr} for lam in (1.0, 0.0) for snr in (0, 10)]
    assert lines_by_other_keys(rows, "lam") == {"snr=0": [(0.0, 0.0), (1.0, 1.0)], "snr=10": [(0.0, 10.0), (1.0, 11.0)]}
    assert lines_by_other_keys([r for r in rows if r["searched"]["snr"] == 0], "lam") == {"adapted": [(0.0, 0.0), (1.0, 1.0)]}


def test_a_parameter_held_at_one_value_gets_no_plot(tmp_path: Path) -> None:
    from platform.report_plots import wer_vs

    rows = [{"status": "FINISHED", "wer": w, "natural_wer": w + 0.1, "searched": {"k": 5, "kind": kind}}
            for w, kind in ((0.3, "mlp"), (0.4, "linear"))]
    assert not wer_vs(rows, "k", 0.5, tmp_path / "k.png", "k") and not (tmp_path / "k.png").exists()
    assert wer_vs(rows, "kind", 0.5, tmp_path / "kind.png", "kind") and (tmp_path / "kind.png").stat().st_size > 0


def test_the_cost_line_sums_wall_gpu_hours_and_energy_where_measured() -> None:
    from platform.report_render import cost_line

    rows = [{"trial_wall_s": 60.0, "gpu_hours": 60 / 3600, "energy_j": 1.8e6},
            {"trial_wall_s": 120.0, "gpu_hours": 120 / 3600, "energy_j": 5.4e6}]
    assert cost_line(rows) == ("Cost: 2 trials, 3.0 trial-minutes in all (mean 1.5 min), 0.05 GPU-hours, "
                               "2.000 kWh of GPU energy in the training steps of 2 trials.")
    cpu = [{"trial_wall_s": 30.0, "gpu_hours": 0.0}]
    assert cost_line(cpu) == "Cost: 1 trial, 0.5 trial-minutes in all (mean 0.5 min), 0.00 GPU-hours."
    assert cost_line([{"wer": 0.1}]) == "Cost: not recorded."


def test_small_values_keep_their_digits_in_the_tables() -> None:
    from platform.report_render import _fmt

    assert _fmt(2.28e-05) == "2.28e-05" and _fmt(0.00081) == "0.00081"
    assert _fmt(0.0508) == "0.0508" and _fmt(0.0) == "0.0000" and _fmt(2440.4) == "2,440.4"


def test_natural_voice_columns_sit_beside_wer_and_only_where_measured() -> None:
    from platform.report_render import columns_for, table

    row = {"trial": "t", "status": "FINISHED", "searched": {"lora.r": 4}, "val_wer": 0.1, "wer": 0.2, "cer": 0.1,
           "natural_wer": 0.12, "natural_cer": 0.05, "natural_wer_general": 0.08}
    cols = columns_for([row])
    assert cols[:6] == ["val_wer", "wer", "natural_wer", "natural_wer_general", "cer", "natural_cer"]
    header = table([row], ["lora.r"], {"natural_wer_general": 0.065}).splitlines()
    assert "natural_wer_general" in header[0] and "0.0650" in header[-1]  # the untuned model's, in the last row
    hub = {k: v for k, v in row.items() if not k.startswith("natural")}
    assert not any(c.startswith("natural") for c in columns_for([hub]))  # user or hub data: no natural voice
