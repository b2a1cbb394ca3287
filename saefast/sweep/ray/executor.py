"""The Ray executor: one sweep's harvests, passes and pair matchings as tasks on a Ray cluster.

`saefast sweep CONFIG --executor ray [--address auto|HOST:PORT]` runs the same plan as the
local executor (`sweep.execute_runs`), through the same seam:

    plan.pending       finished run dirs are skipped (a rerun resumes)
    harvest tasks      one per harvest job (GPU when the runs are on cuda), into the shared cache
    plan.seed_passes   sized by the nodes' memory (or --memory-budget), not the driver's
    pass tasks         one per pass: ray_tasks.train_pass -> sweep.run_pass, with num_cpus,
                       num_gpus (cuda) and memory (plan.pass_bytes) declared; retried up to
                       `retries` times when a worker dies or a transient error is raised
    pair tasks         as soon as both runs of a pair exist, pairs are matched in batches of a
                       few seconds' work (ray_tasks.match_pairs) into OUT/reports/.matchings,
                       the cache the group reports read: the report step matches nothing again

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

import socket
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from saefast.errors import ExecutorError, first_line
from saefast.runs import layout
from saefast.sweep import plan
from saefast.sweep.experiment import RunSpec, groups
from saefast.sweep.local import (
    ClusterProgress,
    Events,
    NodeRate,
    RunOutcome,
    pass_label,
    report_is_current,
    stores_of_job,
)
from saefast.sweep.ray import tasks as ray_tasks

RAY_MISSING = "--executor ray needs Ray: pip install 'saefast[ray]'"
# errors worth another try on a fresh worker (a full disk, a network filesystem's hiccup,
# memory); a worker that dies is retried by Ray whatever the cause. Others fail at once.
TRANSIENT = [OSError, MemoryError]
# a pair task carries about this much matching (plan's rates): task overhead and loading the
# runs (a batch loads each run once) stay small beside it
PAIR_BATCH_SECONDS = 20.0
POLL_SECONDS = 0.5  # how often the driver looks at the tasks and redraws


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


@dataclass
class _Task:
    kind: str  # "pass" or "pairs"
    id: str
    runs: list[RunSpec] = field(default_factory=list)  # a pass's
    group: str = ""


class RayExecutor:
    """`sweep.Executor` on a Ray cluster (see the module docstring). address: None starts or
    joins what `ray.init()` finds ($RAY_ADDRESS, else a local instance), "auto" the running
    cluster, "HOST:PORT" that head node. retries: extra tries of a task. cpus_per_task: the
    CPUs (and torch threads) each task declares. run_pass: what a pass task calls
    (`sweep.run_pass`; tests wrap it)."""

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
        if run_pass is None:
            from saefast.sweep.local import run_pass
        self.run_pass = run_pass

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
                                f"{first_line(e)}") from None

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

    # ------------------------------------------------------------------------ the sweep

    def __call__(self, runs: list[RunSpec], out_dir: Path, *, cache_dir=None,
                 events: Events | None = None, memory_budget: int | None = None,
                 threads: int | None = None) -> list[RunOutcome]:
        from saefast.data.models import cache_root

        events = events or Events()
        out_dir = Path(out_dir).resolve()
        cache = cache_root(cache_dir).resolve()  # the driver's choice, the same on every node
        todo, done = plan.pending(runs, out_dir)
        outcomes = [RunOutcome(spec, "skipped", path=path, metrics=info.get("metrics"))
                    for spec, path, info in done]
        for o in outcomes:
            events.run_finished(o)
        self.connect()
        self._check_gpus(todo)
        for p in (out_dir / layout.RUNS_DIR, out_dir / layout.REPORTS_DIR, cache):
            p.mkdir(parents=True, exist_ok=True)
        self._check_shared([out_dir / layout.RUNS_DIR, cache])
        # a group whose runs were all finished before and whose report is current needs no matching
        training = {r.group for r in todo}
        current = {g for g, members in groups(runs).items()
                   if g not in training and report_is_current(members, out_dir)}
        sweep = _Sweep(self, runs, out_dir, str(cache), events, skip_pairs=current)
        try:
            sweep.add_finished(outcomes)
            if todo:
                self._submit_passes(sweep, todo, str(cache), events, memory_budget)
        except BaseException:  # a harvest that fails, a pass too big: nothing left running
            sweep.abort()
            raise
        return outcomes + sweep.wait()

    def _submit_passes(self, sweep: _Sweep, todo: list[RunSpec], cache: str, events: Events,
                       memory_budget: int | None) -> None:
        """Harvest, then every pass of seeds as a task, sized for the nodes."""
        from saefast.data import store

        sources = self._harvest(todo, cache, events)
        d_model = {g: int(store.store_info(s)["d_model"]) for g, s in sources.items()}
        d_model.update(self._stream_widths(todo, cache, events))
        for device in sorted({r.config.model.device for r in todo}):
            mine = [r for r in todo if r.config.model.device == device]
            budget = self._budget(device, memory_budget)
            for runs_of_pass in plan.seed_passes(mine, {g: d_model[g] for g in groups(mine)}, budget):
                group = runs_of_pass[0].group
                sweep.submit_pass(runs_of_pass, sources.get(group), budget, d_model[group])

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
            sources.update(stores_of_job(todo, job, _get(self.ray, ref)))
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
        return {g: int(_get(self.ray, ref)) for g, ref in refs.items()}


HEAD_TIMEOUT_S = 5.0


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


def _get(ray, ref):
    """ray.get, with a task's own SaefastError raised as itself (one line in the CLI)."""
    from saefast.errors import SaefastError

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, SaefastError):
            raise cause from None
        raise ExecutorError(f"a Ray task failed: {first_line(cause or e)}") from None


class _Sweep:
    """The driver's loop over one sweep's pass and pair tasks."""

    def __init__(self, ex: RayExecutor, runs: list[RunSpec], out_dir: Path, cache: str,
                 events: Events, skip_pairs: set[str]):
        ray = self.ray = ex.ray
        self.ex, self.out_dir, self.cache, self.events = ex, out_dir, cache, events
        self.skip_pairs = skip_pairs
        self.board = ray.remote(ray_tasks.Board).options(num_cpus=0).remote()
        self.pass_task = ray.remote(ray_tasks.train_pass)
        self.pair_task = ray.remote(ray_tasks.match_pairs)
        self.tasks: dict[Any, _Task] = {}  # ObjectRef -> task, while outstanding
        self.counts = {"pass": defaultdict(int), "pairs": defaultdict(int)}
        self.nodes: dict[str, NodeRate] = {}
        self.node_first: dict[str, float] = {}
        self.members = groups(runs)
        self.left = defaultdict(int)  # group -> runs not yet finished or failed
        self.finished: dict[str, list[Path]] = defaultdict(list)  # group -> run dirs that exist
        self.waiting_pairs: list[tuple[float, str, str, str]] = []  # (cost, group, a, b)
        for g, members in self.members.items():
            self.left[g] = len(members)
        from saefast.sweep.local import matching_cache

        self.matchings = str(matching_cache(out_dir).folder)

    # ---- passes

    def submit_pass(self, runs: list[RunSpec], data: Path | None, budget: int, d_model: int) -> None:
        cfg = runs[0].config
        opts = self.ex._resources(cfg.model.device)
        if not cfg.model.device.startswith("cuda"):  # host memory is what a CPU pass uses
            largest = max(n["Resources"].get("memory", 0) for n in self.ex._nodes())
            opts["memory"] = int(min(plan.pass_bytes(cfg, len(runs), d_model, budget), largest))
        task_id = f"pass {self.counts['pass']['submitted']}: {pass_label(runs)}"  # unique
        ref = self.pass_task.options(**opts, max_retries=self.ex.retries,
                                     retry_exceptions=TRANSIENT).remote(
            self.ex.run_pass, runs, data, self.out_dir, memory_budget=budget,
            threads=self.ex.cpus, cache_dir=self.cache, board=self.board, task_id=task_id)
        self.tasks[ref] = _Task("pass", task_id, runs, runs[0].group)
        self.counts["pass"]["submitted"] += 1

    def _pass_done(self, task: _Task, ref) -> list[RunOutcome]:
        try:
            result: ray_tasks.PassResult = self.ray.get(ref)
        except self.ray.exceptions.RayError as e:
            cause = getattr(e, "cause", None) or e
            error = f"{first_line(cause)} (a Ray task; retried up to {self.ex.retries} times " \
                    "when its worker died or the error was transient)"
            self.counts["pass"]["failed"] += 1
            outcomes = [RunOutcome(spec, "failed", error=error) for spec in task.runs]
        else:
            self.counts["pass"]["done"] += 1
            rate = self.nodes.setdefault(result.node, NodeRate())
            first = self.node_first.setdefault(result.node, result.started)
            self.node_first[result.node] = first = min(first, result.started)
            rate.passes += 1
            rate.token_steps += result.token_steps
            rate.seconds = max(time.time() - first, result.seconds)
            outcomes = result.outcomes
        for o in outcomes:
            self.events.run_finished(o)
        self.add_finished(outcomes)
        return outcomes

    # ---- pairs

    def add_finished(self, outcomes: list[RunOutcome]) -> None:
        """Runs that exist now make pairs with the others of their group that exist."""
        for o in outcomes:
            g = o.spec.group
            self.left[g] -= 1
            if o.status == "failed" or o.path is None or g in self.skip_pairs:
                continue
            for other in self.finished[g]:
                self.waiting_pairs.append((self._pair_cost(o.spec), g, str(other), str(o.path)))
            self.finished[g].append(Path(o.path))
        self._submit_pairs()

    def _pair_cost(self, spec: RunSpec) -> float:
        """Seconds to match one pair (plan's rates): the decoder matching, the encoder's and
        the live-only one when asked."""
        c = spec.config
        kinds = 2 + bool(c.match.live_only)
        return kinds * (c.sae.n_features / 16384) ** 2 * plan.MATCH_SECONDS_16K + plan.PAIR_SECONDS

    def _submit_pairs(self) -> None:
        """Batches of about PAIR_BATCH_SECONDS; a group whose runs all exist is flushed now."""
        by_group: dict[str, list] = defaultdict(list)
        for item in self.waiting_pairs:
            by_group[item[1]].append(item)
        self.waiting_pairs = []
        for g, items in by_group.items():
            batch, cost = [], 0.0
            for c, _, a, b in items:
                batch.append((a, b))
                cost += c
                if cost >= self.ex.pair_batch_seconds:
                    self._submit_pair_batch(g, batch)
                    batch, cost = [], 0.0
            if batch and self.left[g] <= 0:
                self._submit_pair_batch(g, batch)
            elif batch:  # more runs of this group are coming: wait for a fuller batch
                self.waiting_pairs += [(cost / len(batch), g, a, b) for a, b in batch]

    def _submit_pair_batch(self, group: str, pairs: list[tuple[str, str]]) -> None:
        mc = self.members[group][0].config.match
        task_id = f"pairs {self.counts['pairs']['submitted']}: {group} ({len(pairs)})"
        ref = self.pair_task.options(num_cpus=self.ex.cpus, max_retries=self.ex.retries,
                                     retry_exceptions=TRANSIENT).remote(
            pairs, self.matchings, live_only=mc.live_only, solver=mc.solver,
            threads=self.ex.cpus, board=self.board, task_id=task_id)
        self.tasks[ref] = _Task("pairs", task_id, group=group)
        self.counts["pairs"]["submitted"] += 1

    def _pairs_done(self, task: _Task, ref) -> None:
        try:
            result: ray_tasks.PairsResult = self.ray.get(ref)
        except self.ray.exceptions.RayError as e:  # the report matches what is missing
            self.counts["pairs"]["failed"] += 1
            self.events.message(f"{task.id}: failed ({first_line(getattr(e, 'cause', None) or e)}); "
                                "the report will match these pairs itself")
            return
        self.counts["pairs"]["done"] += 1
        for err in result.errors:
            self.events.message(f"{task.group}: {err} (left to the report)")

    # ---- the loop

    def wait(self) -> list[RunOutcome]:
        """Until every task has finished; on any error (Ctrl-C included) the outstanding
        tasks are cancelled, as when a killed driver takes its tasks with it."""
        outcomes: list[RunOutcome] = []
        try:
            self._submit_pairs()
            while self.tasks:
                ready, _ = self.ray.wait(list(self.tasks), num_returns=len(self.tasks),
                                         timeout=POLL_SECONDS)
                for ref in ready:
                    task = self.tasks.pop(ref)
                    if task.kind == "pass":
                        outcomes += self._pass_done(task, ref)
                    else:
                        self._pairs_done(task, ref)
                self._progress()
        except BaseException:
            self.abort()
            raise
        self.ray.kill(self.board)
        return outcomes

    def abort(self) -> None:
        """Cancel every outstanding task (their finished work stays on disk)."""
        for ref in self.tasks:
            self.ray.cancel(ref, force=True)
        self.tasks.clear()
        self.ray.kill(self.board)

    def _progress(self) -> None:
        try:
            started, steps = self.ray.get(self.board.snapshot.remote(), timeout=5)
        except Exception:  # progress only: never stop a sweep for it
            started, steps = {}, {}
        state = {}
        for kind in ("pass", "pairs"):
            running = sum(1 for t in self.tasks.values() if t.kind == kind and t.id in started)
            outstanding = sum(1 for t in self.tasks.values() if t.kind == kind)
            c = self.counts[kind]
            state[kind] = {"queued": outstanding - running, "running": running,
                           "done": c["done"], "failed": c["failed"]}
        running = {t.id: (started[t.id], *steps.get(t.id, (0, 0)))
                   for t in self.tasks.values() if t.kind == "pass" and t.id in started}
        self.events.cluster_progress(ClusterProgress(passes=state["pass"], pairs=state["pairs"],
                                                     nodes=dict(self.nodes), running=running))


def executor_from_args(address: str | None, retries: int, threads: int | None) -> RayExecutor:
    """The CLI's RayExecutor: `--threads N` are the CPUs each task declares (default 1)."""
    return RayExecutor(address, retries=retries, cpus_per_task=threads or 1)


__all__ = ["RayExecutor", "import_ray", "ray_info", "executor_from_args", "RAY_MISSING"]
