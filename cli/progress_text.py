"""The words of progress, shared by the rich bars (`tables.RichEvents`) and the plain lines
(`plain_events.PlainEvents`): durations, counts, a training step's numbers."""

from __future__ import annotations


def duration(seconds: float) -> str:
    """"45 s", "4 min 07 s", "2.5 h"; whole seconds are rounded first, so 119.6 s reads
    "2 min 00 s", not "1 min 60 s"."""
    if seconds < 89.5:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        whole = round(seconds)
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{seconds / 3600:.1f} h"


def remaining(done0: float, t0: float, done: float, now: float, total: float) -> str:
    """", ~4 min 10 s left" from the rate since (done0, t0), or "" before there is a rate."""
    if done <= done0 or now <= t0 or done >= total:
        return ""
    return f", ~{duration((total - done) * (now - t0) / (done - done0))} left"


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def step_info(stats: dict) -> str:
    """tok/s, then loss and dead fraction per seed (up to 4 seeds), else mean and range."""
    per_seed = stats.get("per_seed") or {}
    speed = f"{stats['tokens_per_second']:,.0f} tok/s"
    if 1 < len(per_seed) <= 4:
        seeds = "  ".join(f"s{s} {v['loss']:.3g}/{v['dead']:.0%}" for s, v in per_seed.items())
        return f"{speed}  loss/dead {seeds}"
    if len(per_seed) > 4:
        losses = [v["loss"] for v in per_seed.values()]
        deads = [v["dead"] for v in per_seed.values()]
        return (f"{speed}  loss {stats['loss']:.4g} ({min(losses):.3g}-{max(losses):.3g})  "
                f"dead {stats['dead']:.0%} ({min(deads):.0%}-{max(deads):.0%}) over seeds")
    return f"{speed}  loss {stats['loss']:.4g}  dead {stats['dead']:.0%}"
