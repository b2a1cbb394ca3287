"""Kept so `from saefast.ray_executor import RayExecutor` (the README's spelling before the
restructure) still works; the executor lives in `saefast.sweep.ray.executor`."""

from saefast.sweep.ray.executor import RayExecutor

__all__ = ["RayExecutor"]
