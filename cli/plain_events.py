"""Progress as plain lines, for a console that is not a terminal (`saefast sweep ... > log`):
a line per harvest, pass, finished run and report step, and within a long phase a line at
most every `EVERY` seconds. Bars cannot redraw in a file: rich would leave one frozen frame
cut to the width, so nothing here is redrawn, coloured or cut (`tables.RichEvents` hands a
console that is not a terminal to this class)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from rich.console import Console

from saefast.cli.progress_text import duration, plural, remaining, step_info
from saefast.sweep.events import ClusterProgress, Events, RunOutcome
from saefast.sweep.plan import HarvestJob

EVERY = 30.0  # seconds between two lines of one phase: a log stays short, a tail stays alive
RATE_WINDOW = 300.0  # seconds of counts the time left is estimated from


class PlainEvents(Events):
    """One line per event worth a line; steps, harvest chunks, matched pairs and a cluster's
    counts only every `every` seconds (they come many times a second)."""

    def __init__(self, console: Console, every: float = EVERY,
                 clock: Callable[[], float] = time.monotonic):
        self.console, self.every, self.clock = console, every, clock
        self._phase = self._last = clock()  # when the phase began, when its last line was
        self._what = ""  # what the counts in _samples count
        self._samples: deque[tuple[float, float]] = deque()  # (when, count), oldest first
        self._harvested = False
        self._cluster_finished: tuple | None = None  # tasks done and failed at the last line

    def _say(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def _begin(self) -> None:
        self._phase = self._last = self.clock()
        self._what = ""

    def _left(self, what: str, done: float, total: float) -> str:
        """", ~N min left" at the rate of `what` over the last RATE_WINDOW seconds: not from
        0 (a resumed pass starts at its checkpoint's step), and not from the phase's start
        (pairs read from the matching cache go by in a second, the rest take minutes)."""
        now = self.clock()
        if what != self._what:
            self._what = what
            self._samples.clear()
        self._samples.append((now, done))
        while len(self._samples) > 2 and self._samples[1][0] <= now - RATE_WINDOW:
            self._samples.popleft()  # keep one sample at or before the window's start
        t0, done0 = self._samples[0]
        return remaining(done0, t0, done, now, total)

    def _due(self) -> bool:
        now = self.clock()
        if now - self._last < self.every:
            return False
        self._last = now
        return True

    def _elapsed(self) -> str:
        return duration(self.clock() - self._phase)

    def harvest_started(self, job: HarvestJob) -> None:
        self._begin()
        self._harvested = False
        self._say(f"harvesting {job.tokens:,} tokens of {job.corpus} through {job.model} at "
                  f"{', '.join(job.hooks)}")

    def harvest_progress(self, done: int, total: int) -> None:
        if done >= total:
            if not self._harvested:  # said once, however often the last chunk is reported
                self._harvested = True
                self._say(f"harvested {total:,} tokens in {self._elapsed()}")
        else:
            left = self._left("harvest", done, total)
            if self._due():
                self._say(f"harvest: {done:,}/{total:,} tokens ({done / max(total, 1):.0%}), "
                          f"{self._elapsed()}{left}")

    def pass_started(self, label: str, n_seeds: int, index: int, total: int) -> None:
        self._begin()
        self._say(f"pass {index + 1}/{total}: {label} ({plural(n_seeds, 'SAE')} together)")

    def run_step(self, step: int, total: int, stats: dict) -> None:
        left = self._left("steps", step, total)
        if step < total and self._due():
            self._say(f"  step {step:,}/{total:,} ({step / max(total, 1):.0%}), "
                      f"{self._elapsed()}{left}: {step_info(stats)}")

    def run_evaluation(self, done: int, total: int) -> None:
        if done == 0:  # a phase of its own: its clock and rate start here
            self._begin()
        left = self._left("evaluation", done, total)
        if done == 0:
            self._say(f"  counting firings over the {total:,} training tokens")
        elif done < total and self._due():
            self._say(f"  firing counts: {done:,}/{total:,} tokens ({done / max(total, 1):.0%}), "
                      f"{self._elapsed()}{left}")

    def run_finished(self, outcome: RunOutcome) -> None:
        name = outcome.spec.name
        if outcome.status == "failed":
            self._say(f"run {name} failed: {outcome.error}")
        elif outcome.status == "skipped":
            self._say(f"run {name}: already done")
        else:
            self._say(f"run {name}: trained{_metrics(outcome.metrics or {})}")

    def report_started(self, group: str) -> None:
        self._begin()
        self._say(f"matching pairs of {group}")

    def report_step(self, group: str, step: str, index: int, total: int) -> None:
        self._last = self.clock()
        self._say(f"  {group}: report step {index + 1}/{total}: {step.replace('_', ' ')} "
                  f"({self._elapsed()})")

    def report_pair(self, group: str, done: int, total: int) -> None:
        left = self._left(f"pairs of {group}", done, total)
        if done < total and self._due():
            self._say(f"  {group}: {done:,}/{total:,} pairs matched, {self._elapsed()}{left}")

    def message(self, text: str) -> None:
        self._say(text)

    def cluster_progress(self, progress: ClusterProgress) -> None:
        # a line when a task finishes or fails (a short sweep's only news), else when due
        finished = tuple(counts.get(k, 0) for counts in (progress.passes, progress.pairs)
                         for k in ("done", "failed"))
        if finished == self._cluster_finished and not self._due():
            return
        self._cluster_finished, self._last = finished, self.clock()
        self._say("Ray cluster: " + "; ".join(
            f"{name} " + ", ".join(f"{counts.get(k, 0)} {k}"
                                   for k in ("queued", "running", "done", "failed"))
            for name, counts in (("passes", progress.passes),
                                 ("pair batches", progress.pairs))))

    def close(self) -> None:
        """Nothing to stop (`RichEvents.close` stops its bars; the CLI calls either)."""


def _metrics(metrics: dict) -> str:
    """", held-out FVU 0.21, dead 3%, 12 s" from what a run's metrics hold."""
    held = metrics.get("held_out") or metrics.get("train") or {}
    parts = []
    if held.get("fvu") is not None:
        parts.append(f"{'held-out' if metrics.get('held_out') else 'train'} FVU {held['fvu']:.3g}")
    if held.get("dead_fraction") is not None:
        parts.append(f"dead {held['dead_fraction']:.0%}")
    if metrics.get("train_seconds") is not None:
        parts.append(f"{duration(metrics['train_seconds'])} of training")
    return (", " + ", ".join(parts)) if parts else ""
