"""A method's entry points (parse a config, run it in-process, Ray Train's train loop) and starting
that loop on Ray Train workers."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from trainables import load_method
from trainables.blocks.config import ConfigError, build

if TYPE_CHECKING:
    from trainables.blocks.finish import Outcome

CONFIG_ERROR = "config_error"
"""The result key under which a worker hands back a ConfigError instead of raising it (see train_loop_per_worker)."""

C = TypeVar("C")
S = TypeVar("S")


Finish = Callable[[Any, list[dict[str, float]], Any], tuple[dict[str, float], Path | None]]
"""`finish(setup, history, stepper)`: the method's `measure`, then the shared `finish.finish_trial`."""


def entry_points(config_cls: type[C], setup: Callable[[C], S], train: Callable[[S], tuple[list[dict[str, float]], Any]],
                 measure: Callable[[S, list[dict[str, float]], Any], Outcome],
                 ) -> tuple[Callable[[dict[str, Any]], C], Callable[[C], dict[str, float]],
                            Callable[[dict[str, Any]], None], Finish]:
    """`parse_config`, `run`, `train_loop_per_worker` and `finish` of a method, the same for every method.

    - `parse_config(dict)` builds and checks `config_cls` (a ConfigError names the field);
    - `finish(s, history, stepper)` hands what the method's `measure` returns to the shared `finish_trial`
      (evaluation, the contract's metrics, the artifact folder): (metrics, folder on rank 0);
    - `run(cfg)` is setup -> train -> finish, then reports the metrics (with `restarts`, how many times
      this Ray Train run was started before) and, from rank 0, the artifact folder to Ray Train, or prints
      them outside it; it returns the metrics;
    - `train_loop_per_worker(dict)` is Ray Train's entry point: `run(parse_config(dict))`.
    """
    from trainables.blocks.checkpoints import finished_result, restarts
    from trainables.blocks.distributed import in_ray_train
    from trainables.blocks.finish import finish_trial, report

    def parse_config(config: dict[str, Any]) -> C:
        return build(config_cls, config)

    def finish(s: S, history: list[dict[str, float]], stepper: Any) -> tuple[dict[str, float], Path | None]:
        return finish_trial(s.cfg, history, measure(s, history, stepper))  # type: ignore[attr-defined]

    def run(cfg: C) -> dict[str, float]:
        attempt = restarts()  # counted first: an attempt that dies in setup is still one
        done = finished_result()
        if done is not None:  # finished before this attempt began: the same result, with this attempt counted
            metrics = {**done[0], "restarts": float(attempt)}
            report(metrics, done[1])
            return metrics
        s = setup(cfg)
        metrics, artifacts = finish(s, *train(s))
        metrics = {**metrics, "restarts": float(attempt)}
        report(metrics, artifacts)
        return metrics

    def train_loop_per_worker(config: dict[str, Any]) -> None:
        try:
            run(parse_config(config))
        except ConfigError as exc:
            if not in_ray_train():
                raise
            # A config this worker cannot run (a paged optimiser without CUDA, ...) fails the same way on every
            # attempt: the attempt ends with the error as its result, so Ray Train's failure policy does not
            # retry it, and the trial (platform.runner) raises it.
            report_config_error(str(exc))

    return parse_config, run, train_loop_per_worker, finish


def torch_trainer(method: str, config: dict[str, Any], *, num_workers: int = 1, use_gpu: bool = False,
                  cpus_per_worker: float = 1.0, gpus_per_worker: float = 1.0, storage_path: str | None = None,
                  name: str | None = None, callbacks: Sequence[Any] = (), max_failures: int = 0,
                  keep_checkpoints: int = 2, check: bool = True) -> Any:
    """A Ray Train trainer running `method`'s train loop with `config` on workers joined in a torch process group
    (gloo on CPU, nccl on GPU).

    `max_failures`: how many times Ray Train restarts a failed worker group (each restart resumes from the
    latest checkpoint); `keep_checkpoints`: how many of the latest checkpoints stay in storage; `check`: build the
    method's config and check its worker limit here first. A sweep's trials pass False: the sweep checked both
    before it started, and a combination of values it could not check fails in the worker as the trial's
    ConfigError. So a trial function imports neither the method nor torch (2 s of a sweep's first trial)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    from trainables.blocks.process_group import ProcessGroupConfig

    if check:
        module = load_method(method)
        module.parse_config(config)  # fail here, on the driver, not in every worker
        if module.MAX_WORKERS is not None and num_workers > module.MAX_WORKERS:
            raise ValueError(f"num_workers: method {method!r} trains on at most {module.MAX_WORKERS} worker(s), "
                             f"got {num_workers}")
    resources = {"CPU": cpus_per_worker}
    if use_gpu:
        resources["GPU"] = gpus_per_worker
    return DataParallelTrainer(
        functools.partial(method_train_loop, method),
        train_loop_config=config,
        backend_config=ProcessGroupConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(storage_path=storage_path, name=name, callbacks=list(callbacks),
                             failure_config=FailureConfig(max_failures=max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=keep_checkpoints)),
    )


def method_train_loop(method: str, config: dict[str, Any]) -> None:
    """What each Ray Train worker runs: `method`'s `train_loop_per_worker`. The method is imported here, on the
    worker, and not where the trainer is built."""
    load_method(method).train_loop_per_worker(config)


def report_config_error(message: str) -> None:
    """Hand a worker's ConfigError back as the run's result. Ray Train's Result keeps only metrics reported with
    a checkpoint, so rank 0 attaches one holding the message."""
    import shutil
    import tempfile

    import ray.train

    from trainables.blocks.distributed import world

    if world()[0] != 0:
        ray.train.report({CONFIG_ERROR: message})
        return
    folder = Path(tempfile.mkdtemp(prefix="trial-error-"))
    try:
        (folder / "config_error.txt").write_text(message + "\n")
        ray.train.report({CONFIG_ERROR: message}, checkpoint=ray.train.Checkpoint.from_directory(str(folder)))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# Paths under the repository that Ray must not upload with the working directory.
RUNTIME_EXCLUDES = [".venv/", ".git/", "mlruns/", "mlartifacts/", "mlflow.db", "ray_results/", "reports/", "outputs/",
                    "**/__pycache__/", ".pytest_cache/", ".ruff_cache/"]


def runtime_env(root: str, private: bool = False) -> dict[str, Any]:
    """Ray runtime environment that puts the repository first on every worker's path. `private`: for a Ray
    started on this machine for one job, whose only node cannot be drained or preempted."""
    env_vars = {"TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore::FutureWarning",
                "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                # Ray Train's controller polls its workers this often (default 2 s): a finished train loop
                # waited 1-2 s for the next poll before its trial could end (docs/benchmarks.md).
                "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}
    if private:
        # Ray Train starts an actor per Train run that watches for nodes being drained (spot preemption). A
        # private Ray has nothing to watch, and the actor's start cost each trial about 1 s on 2 cores
        # (docs/benchmarks.md); clusters keep it.
        env_vars["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = "0"
    return {"working_dir": root, "excludes": RUNTIME_EXCLUDES, "env_vars": env_vars}
