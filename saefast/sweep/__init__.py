"""A sweep: the experiment grid and run names (`experiment`), the plan before any work
(`plan`: pending runs, harvest jobs, passes that fit, estimates), the executors behind one
seam (`executor`; `local`, `ray/`), one pass of seeds (`passes`, with `threads`,
`seed_pool` and `seed_worker`), the report step (`analyze`), summary.json (`summary`),
progress (`events`), and the whole of it (`pipeline`).

`run_sweep` is the entry point (`from saefast.sweep import run_sweep`). It is resolved on
first use (PEP 562): the pipeline imports torch, and the CLI's checks before any work
(`plan.preflight`) import this package without it, so a typo fails in a second."""

__all__ = ["run_sweep"]


def __getattr__(name: str):
    if name == "run_sweep":
        from saefast.sweep.pipeline import run_sweep

        return run_sweep
    raise AttributeError(f"module 'saefast.sweep' has no attribute {name!r}")
