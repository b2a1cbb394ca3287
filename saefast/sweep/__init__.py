"""A sweep: the experiment grid and run names, the plan (pending runs, harvest jobs, passes that
fit, estimates), executors (local, seed workers, `ray/`) behind one seam, and the summary.

`run_sweep` is the entry point (`from saefast.sweep import run_sweep`)."""

from saefast.sweep.local import run_sweep

__all__ = ["run_sweep"]
