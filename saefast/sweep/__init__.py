"""A sweep: the experiment grid and run names (`experiment`), the plan before any work
(`plan`: pending runs, harvest jobs, passes that fit, estimates), the executors behind one
seam (`executor`; `local`, `ray/`), one pass of seeds (`passes`, with `threads`,
`seed_pool` and `seed_worker`), the report step (`analyze`), summary.json (`summary`),
progress (`events`), and the whole of it (`pipeline`).

`run_sweep` is the entry point (`from saefast.sweep import run_sweep`)."""

from saefast.sweep.pipeline import run_sweep

__all__ = ["run_sweep"]
