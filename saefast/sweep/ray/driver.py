"""The Ray driver's loop over one sweep's tasks: pass tasks submitted, pair matchings batched
as runs appear, results and failures read back, progress drawn.

`SweepDriver` holds the tasks that are outstanding; `task_result` is how every result is
read back (one translation of a failed task for all of them). `RayExecutor` builds the
driver and submits the passes; the driver does the rest.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from saefast.errors import ExecutorError, SaefastError, first_line
from saefast.sweep import plan
from saefast.sweep.analyze import matching_cache
from saefast.sweep.events import ClusterProgress, Events, NodeRate, RunOutcome
from saefast.sweep.executor import pass_label
from saefast.sweep.experiment import RunSpec, groups
from saefast.sweep.ray import tasks as ray_tasks

__all__ = ["SweepDriver", "task_result", "get", "TRANSIENT"]

# errors worth another try on a fresh worker (a full disk, a network filesystem's hiccup,
# memory); a worker that dies is retried by Ray whatever the cause. Others fail at once.
TRANSIENT = [OSError, MemoryError]
POLL_SECONDS = 0.5  # how often the driver looks at the tasks and redraws
ABORT_GRACE_SECONDS = 30.0  # a cancelled task's time to stop by itself before it is killed


def task_result(ray, ref) -> tuple[Any, BaseException | None]:
    """(what the task returned, None), or (None, why it failed): the task's own exception
    when Ray kept it, else Ray's (a worker or node that died after its retries)."""
    try:
        return ray.get(ref), None
    except ray.exceptions.RayError as e:
        return None, getattr(e, "cause", None) or e


def get(ray, ref):
    """What a task returned; a task's own SaefastError is raised as itself (one line in the
    CLI), any other failure as an ExecutorError naming it."""
    result, error = task_result(ray, ref)
    if isinstance(error, SaefastError):
        raise error from None
    if error is not None:
        raise ExecutorError(f"a Ray task failed: {first_line(error)}") from None
    return result


@dataclass
class _Task:
    kind: str  # "pass" or "pairs"
    id: str
    runs: list[RunSpec] = field(default_factory=list)  # a pass's
    group: str = ""


class SweepDriver:
    """The driver's loop over one sweep's pass and pair tasks. skip_pairs: groups whose
    report is current, so their pairs need no matching. run_pass, retries, cpus,
    pair_batch_seconds: the RayExecutor's settings (what a pass task calls, extra tries of
    a task, the CPUs each declares, the work in a batch of pairs)."""

    def __init__(self, ray, runs: list[RunSpec], out_dir: Path, cache: str, events: Events, *,
                 skip_pairs: set[str], run_pass: Callable, retries: int, cpus: int,
                 pair_batch_seconds: float):
        self.ray, self.out_dir, self.cache, self.events = ray, out_dir, cache, events
        self.skip_pairs, self.run_pass = skip_pairs, run_pass
        self.retries, self.cpus, self.pair_batch_seconds = retries, cpus, pair_batch_seconds
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
        self.matchings = str(matching_cache(out_dir).folder)

    # ---- passes

    def submit_pass(self, runs: list[RunSpec], data: Path | None, budget: int,
                    resources: dict[str, Any]) -> None:
        """One pass as a task, declaring `resources` (CPUs, GPU, memory)."""
        task_id = f"pass {self.counts['pass']['submitted']}: {pass_label(runs)}"  # unique
        ref = self.pass_task.options(**resources, max_retries=self.retries,
                                     retry_exceptions=TRANSIENT).remote(
            self.run_pass, runs, data, self.out_dir, memory_budget=budget,
            threads=self.cpus, cache_dir=self.cache, board=self.board, task_id=task_id)
        self.tasks[ref] = _Task("pass", task_id, runs, runs[0].group)
        self.counts["pass"]["submitted"] += 1

    def _pass_done(self, task: _Task, ref) -> list[RunOutcome]:
        result, error = task_result(self.ray, ref)
        if error is not None:
            why = f"{first_line(error)} (a Ray task; retried up to {self.retries} times " \
                  "when its worker died or the error was transient)"
            self.counts["pass"]["failed"] += 1
            outcomes = [RunOutcome(spec, "failed", error=why) for spec in task.runs]
        else:
            self._count_throughput(result)
            outcomes = result.outcomes
        for o in outcomes:
            self.events.run_finished(o)
        self.add_finished(outcomes)
        return outcomes

    def _count_throughput(self, result: ray_tasks.PassResult) -> None:
        self.counts["pass"]["done"] += 1
        rate = self.nodes.setdefault(result.node, NodeRate())
        first = self.node_first.setdefault(result.node, result.started)
        self.node_first[result.node] = first = min(first, result.started)
        rate.passes += 1
        rate.token_steps += result.token_steps
        rate.seconds = max(time.time() - first, result.seconds)

    # ---- pairs

    def add_finished(self, outcomes: list[RunOutcome]) -> None:
        """Runs that exist now make pairs with the others of their group that exist."""
        for o in outcomes:
            g = o.spec.group
            self.left[g] -= 1
            if o.status == "failed" or o.path is None or g in self.skip_pairs:
                continue
            for other in self.finished[g]:
                self.waiting_pairs.append((plan.pair_seconds(o.spec.config), g, str(other),
                                           str(o.path)))
            self.finished[g].append(Path(o.path))
        self._submit_pairs()

    def _submit_pairs(self) -> None:
        """Batches of about pair_batch_seconds; a group whose runs all exist is flushed now."""
        by_group: dict[str, list] = defaultdict(list)
        for item in self.waiting_pairs:
            by_group[item[1]].append(item)
        self.waiting_pairs = []
        for g, items in by_group.items():
            batch, cost = [], 0.0
            for c, _, a, b in items:
                batch.append((a, b))
                cost += c
                if cost >= self.pair_batch_seconds:
                    self._submit_pair_batch(g, batch)
                    batch, cost = [], 0.0
            if batch and self.left[g] <= 0:
                self._submit_pair_batch(g, batch)
            elif batch:  # more runs of this group are coming: wait for a fuller batch
                self.waiting_pairs += [(cost / len(batch), g, a, b) for a, b in batch]

    def _submit_pair_batch(self, group: str, pairs: list[tuple[str, str]]) -> None:
        task_id = f"pairs {self.counts['pairs']['submitted']}: {group} ({len(pairs)})"
        ref = self.pair_task.options(num_cpus=self.cpus, max_retries=self.retries,
                                     retry_exceptions=TRANSIENT).remote(
            pairs, self.matchings, match=self.members[group][0].config.match,
            threads=self.cpus, board=self.board, task_id=task_id)
        self.tasks[ref] = _Task("pairs", task_id, group=group)
        self.counts["pairs"]["submitted"] += 1

    def _pairs_done(self, task: _Task, ref) -> None:
        errors, failed = task_result(self.ray, ref)
        if failed is not None:  # the report matches what is missing
            self.counts["pairs"]["failed"] += 1
            self.events.message(f"{task.id}: failed ({first_line(failed)}); "
                                "the report will match these pairs itself")
            return
        self.counts["pairs"]["done"] += 1
        for err in errors:
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
        """Cancel every outstanding task (their finished work stays on disk) and wait until
        they have stopped, so that nothing writes into OUT after the driver has moved on.

        Cancelling is cooperative first (KeyboardInterrupt inside the task), forced only for
        a task still running ABORT_GRACE_SECONDS later: Ray 2.60's driver aborts (a failed
        RAY_CHECK, "Tried to complete task that was not pending") when a task it force-cancels
        finishes at the same moment, which took the whole driver process with it."""
        refs = list(self.tasks)
        self.tasks.clear()
        for ref in refs:
            self.ray.cancel(ref, force=False)
        if refs:
            _, running = self.ray.wait(refs, num_returns=len(refs), timeout=ABORT_GRACE_SECONDS)
            for ref in running:
                self.ray.cancel(ref, force=True)
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
