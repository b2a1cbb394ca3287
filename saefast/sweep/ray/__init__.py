"""The Ray executor: a sweep's harvests, passes and pair matchings as Ray tasks on a cluster.
Ray is imported only when a `RayExecutor` is built."""
