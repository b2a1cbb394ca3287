"""The Ray executor: a sweep's harvests, passes and pair matchings as Ray tasks on a cluster.

`executor` (RayExecutor: the cluster checked, the passes sized and submitted), `driver`
(the loop over the outstanding tasks, pair batches, progress), `tasks` (what each task runs
on a worker). Ray is imported only when a `RayExecutor` is built."""
