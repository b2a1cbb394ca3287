"""The Ray executor: one sweep's harvests, passes and pair matchings as tasks on a Ray cluster.

`saefast sweep CONFIG --executor ray [--address auto|HOST:PORT]` runs the same plan as the
local executor (`sweep.local.LocalExecutor`), from the same steps (`sweep.executor`):

    skip_finished      finished run dirs are skipped (a rerun resumes)
    harvest tasks      one per harvest job (GPU when the runs are on cuda), into the shared cache
    plan.seed_passes   sized by the nodes' memory (or --memory-budget), not the driver's
    pass tasks         one per pass: tasks.train_pass -> passes.run_pass, with num_cpus,
                       num_gpus (cuda) and memory (plan.pass_bytes) declared; retried up to
                       `retries` times when a worker dies or a transient error is raised
    pair tasks         as soon as both runs of a pair exist, pairs are matched in batches of a
                       few seconds' work (tasks.match_pairs: plan.report_matchings) into
                       OUT/reports/.matchings, the cache the group reports read, so the
                       report step does not make these matchings again

The driver's loop over the pass and pair tasks is `ray.driver.SweepDriver`.

Results are written by the tasks themselves, so OUT and the activation cache must be on a
filesystem every node shares (checked at the start by a probe on each node). A run dir lands
whole or not at all (fsio), so a lost node or a killed driver loses only unfinished tasks; a
killed pass resumes from its checkpoint. A pass that still fails after its retries is
recorded as failed runs with the error and the sweep finishes the rest (exit status 1).

Ray is an optional extra (`pip install 'saefast[ray]'`), imported only here and only when
this executor is built. Results do not depend on the thread count (saefast.sweep.threads), so a
Ray worker's one thread gives the local executor's bits.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from typing import Any, Callable

from saefast.errors import ExecutorError, first_line
from saefast.runs import layout
from saefast.sweep import plan
from saefast.sweep.analyze import report_is_current
from saefast.sweep.events import Events, RunOutcome
from saefast.sweep.executor import Executor, skip_finished, source_width, stores_of_job
from saefast.sweep.experiment import RunSpec, groups
from saefast.sweep.passes import run_pass as run_pass_
from saefast.sweep.ray import tasks as ray_tasks
from saefast.sweep.ray.driver import TRANSIENT, SweepDriver, get

RAY_MISSING = "--executor ray needs Ray: pip install 'saefast[ray]'"
# a pair task carries about this much matching (plan's rates): task overhead and loading the
# runs (a batch loads each run once) stay small beside it
PAIR_BATCH_SECONDS = 20.0
HEAD_TIMEOUT_S = 5.0


def ray_info() -> str:
    """For `saefast info`: Ray's version, or how to install it (ray is not imported)."""
    from importlib import metadata

    try:
        return f"{metadata.version('ray')} (saefast sweep --executor ray)"
    except metadata.PackageNotFoundError:
        return "not installed (--executor ray needs pip install 'saefast[ray]')"


def import_ray():
    """ray, or one line telling how to install it."""
    try:
        import ray
    except ImportError:
        raise ExecutorError(RAY_MISSING) from None
    return ray


class RayExecutor(Executor):
    """`sweep.executor.Executor` on a Ray cluster (see the module docstring). address: None
    starts or joins what `ray.init()` finds ($RAY_ADDRESS, else a local instance), "auto" the
    running cluster, "HOST:PORT" that head node. retries: extra tries of a task.
    cpus_per_task: the CPUs (and torch threads) each task declares. run_pass: what a pass
    task calls (`passes.run_pass`; tests wrap it)."""

    local_devices = False  # the runs' devices are the cluster's, checked there

    def __init__(self, address: str | None = None, *, retries: int = 2, cpus_per_task: int = 1,
                 pair_batch_seconds: float = PAIR_BATCH_SECONDS,
                 run_pass: Callable | None = None, init_kwargs: dict | None = None):
        self.ray = import_ray()
        if retries < 0:
            raise ExecutorError(f"--retries must be >= 0, got {retries}")
        if cpus_per_task < 1:
            raise ExecutorError(f"CPUs per task must be >= 1, got {cpus_per_task}")
        self.address, self.retries, self.cpus = address, retries, cpus_per_task
        self.pair_batch_seconds = pair_batch_seconds
        self.init_kwargs = dict(init_kwargs or {})
        self.run_pass = run_pass or run_pass_

    # ------------------------------------------------------------------------ cluster

    def connect(self) -> None:
        if self.ray.is_initialized():
            return
        _check_reachable(self.address)
        try:
            self.ray.init(address=self.address, log_to_driver=False, **self.init_kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = self.address or "a local instance"
            raise ExecutorError(f"cannot start or reach the Ray cluster ({where}): "
                                f"{first_line(e)}{_auth_hint(self.address)}") from None

    def _nodes(self) -> list[dict]:
        return [n for n in self.ray.nodes() if n.get("Alive")]

    def _check_shared(self, paths: list[Path]) -> None:
        """Every node must see OUT and the cache: a probe file each, read on every node."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from saefast.fsio import atomic_open

        token = uuid.uuid4().hex
        files = [p / f".ray-probe-{token}" for p in paths]
        for f in files:
            with atomic_open(f) as fh:
                fh.write(token)
        try:
            probe = self.ray.remote(ray_tasks.probe)
            refs = {n["NodeManagerAddress"]: probe.options(
                num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote([str(f) for f in files], token) for n in self._nodes()}
            for node, ref in refs.items():
                missing = self.ray.get(ref)
                if missing:
                    raise ExecutorError(
                        f"node {node} does not see {Path(missing[0]).parent}: --out and "
                        "--cache-dir must be on a filesystem every node shares")
        finally:
            for f in files:
                f.unlink(missing_ok=True)

    def _budget(self, device: str, memory_budget: int | None) -> int:
        """The training budget of one task's node: --memory-budget, else the smallest node's
        memory as Ray counts it (CPU), or a GPU node's free GPU memory (cuda)."""
        if memory_budget:
            return memory_budget
        if device.startswith("cuda"):
            task = self.ray.remote(ray_tasks.device_memory).options(num_gpus=1, num_cpus=0)
            return int(self.ray.get(task.remote(device)))
        return int(min(n["Resources"].get("memory", 0) for n in self._nodes()
                       if n["Resources"].get("CPU")))

    def _check_gpus(self, todo: list[RunSpec]) -> None:
        devices = {r.config.model.device for r in todo}
        numbered = sorted(d for d in devices if d.startswith("cuda:"))
        if numbered:  # Ray gives each task its GPU as the only one it sees
            raise ExecutorError(f"device {numbered[0]!r}: with --executor ray use --device cuda "
                                "(Ray assigns each task its own GPU)")
        if "cuda" in devices and not self.ray.cluster_resources().get("GPU"):
            raise ExecutorError("runs on cuda but the Ray cluster has no GPU (start GPU nodes "
                                "with `ray start ... --num-gpus N`, or use --device cpu)")

    def _resources(self, device: str) -> dict[str, Any]:
        return {"num_cpus": self.cpus, "num_gpus": 1 if device.startswith("cuda") else 0}

    def _pass_resources(self, runs: list[RunSpec], d_model: int, budget: int) -> dict[str, Any]:
        """What a pass task declares: CPUs, a GPU on cuda, and on CPU the host memory the
        pass uses (plan.pass_bytes, at most the largest node's)."""
        cfg = runs[0].config
        opts = self._resources(cfg.model.device)
        if not cfg.model.device.startswith("cuda"):  # host memory is what a CPU pass uses
            largest = max(n["Resources"].get("memory", 0) for n in self._nodes())
            opts["memory"] = int(min(plan.pass_bytes(cfg, len(runs), d_model, budget), largest))
        return opts

    # ------------------------------------------------------------------------ the sweep

    def __call__(self, runs: list[RunSpec], out_dir: Path, *, cache_dir: str | Path | None = None,
                 events: Events | None = None, memory_budget: int | None = None,
                 threads: int | None = None) -> list[RunOutcome]:
        """`Executor.__call__` on the cluster; `threads` is unused: each task takes the
        executor's cpus_per_task."""
        from saefast.data.models import cache_root

        events = events or Events()
        out_dir = Path(out_dir).resolve()
        cache = cache_root(cache_dir).resolve()  # the driver's choice, the same on every node
        todo, outcomes = skip_finished(runs, out_dir, events)
        self.connect()
        self._check_gpus(todo)
        for p in (layout.runs_dir(out_dir), layout.reports_dir(out_dir), cache):
            p.mkdir(parents=True, exist_ok=True)
        self._check_shared([layout.runs_dir(out_dir), cache])
        # a group whose runs were all finished before and whose report is current needs no matching
        training = {r.group for r in todo}
        current = {g for g, members in groups(runs).items()
                   if g not in training and report_is_current(members, out_dir)}
        driver = SweepDriver(self.ray, runs, out_dir, str(cache), events, skip_pairs=current,
                             run_pass=self.run_pass, retries=self.retries, cpus=self.cpus,
                             pair_batch_seconds=self.pair_batch_seconds)
        try:
            driver.add_finished(outcomes)
            if todo:
                self._submit_passes(driver, todo, str(cache), events, memory_budget)
        except BaseException:  # a harvest that fails, a pass too big: nothing left running
            driver.abort()
            raise
        return outcomes + driver.wait()

    def _submit_passes(self, driver: SweepDriver, todo: list[RunSpec], cache: str,
                       events: Events, memory_budget: int | None) -> None:
        """Harvest, then every pass of seeds as a task, sized for the nodes."""
        sources = self._harvest(todo, cache, events)
        d_model = {g: source_width(s) for g, s in sources.items()}
        d_model.update(self._stream_widths(todo, cache, events))
        for device in sorted({r.config.model.device for r in todo}):
            mine = [r for r in todo if r.config.model.device == device]
            budget = self._budget(device, memory_budget)
            for runs_of_pass in plan.seed_passes(mine, {g: d_model[g] for g in groups(mine)}, budget):
                group = runs_of_pass[0].group
                driver.submit_pass(runs_of_pass, sources.get(group), budget,
                                   self._pass_resources(runs_of_pass, d_model[group], budget))

    def _harvest(self, todo: list[RunSpec], cache: str, events: Events) -> dict[str, Path]:
        """Every harvest job as a task (on a GPU for cuda runs), all at once; group -> store."""
        task = self.ray.remote(ray_tasks.harvest)
        refs = []
        for job in plan.harvest_jobs(todo):
            events.harvest_started(job)
            refs.append((job, task.options(**self._resources(job.device),
                                           max_retries=self.retries,
                                           retry_exceptions=TRANSIENT).remote(job, cache, self.cpus)))
        sources: dict[str, Path] = {}
        for job, ref in refs:
            sources.update(stores_of_job(todo, job, get(self.ray, ref)))
        return sources

    def _stream_widths(self, todo: list[RunSpec], cache: str, events: Events) -> dict[str, int]:
        """d_model of each streamed group, from a task where its model runs (the driver may
        have no GPU)."""
        task = self.ray.remote(ray_tasks.stream_width)
        refs = {}
        for g, members in groups([r for r in todo if not r.config.data.cache]).items():
            events.message(f"{g}: streaming activations from the model (no disk cache)")
            refs[g] = task.options(**self._resources(members[0].config.model.device),
                                   max_retries=self.retries).remote(members[0], cache)
        return {g: int(get(self.ray, ref)) for g, ref in refs.items()}


def _check_reachable(address: str | None) -> None:
    """A HOST:PORT that does not answer is one line now; Ray itself retries for minutes."""
    if not address or address in ("auto", "local") or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ExecutorError(f"--address {address!r}: expected auto or HOST:PORT (e.g. 10.0.0.1:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=HEAD_TIMEOUT_S).close()
    except OSError as e:
        raise ExecutorError(f"no Ray head answers at {address} ({e.strerror or e}): is "
                            "`ray start --head` running there?") from None


def executor_from_args(address: str | None, retries: int, threads: int | None) -> RayExecutor:
    """The CLI's RayExecutor: `--threads N` are the CPUs each task declares (default 1)."""
    return RayExecutor(address, retries=retries, cpus_per_task=threads or 1)


__all__ = ["RayExecutor", "import_ray", "ray_info", "executor_from_args", "RAY_MISSING"]


def _auth_hint(address: str | None) -> str:
    """Ray refuses a driver without the cluster's token (on by default for `ray start
    --head` since Ray 2.59) with only 'Failed to connect': say how the token gets here."""
    if not address or os.environ.get("RAY_AUTH_MODE"):
        return ""
    return ("; if the cluster uses token authentication (Ray's default for `ray start --head`), "
            "set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (from `ray get-auth-token` on the head) "
            "in this shell")
