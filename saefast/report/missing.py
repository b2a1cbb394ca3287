"""No statistic can crash a report: what cannot be computed is recorded as missing, with the
reason, and the rest of the report is written.

    guarded(report, step, fn)   run one optional step of the assembly; an error in it becomes
                                summary.missing[step] = "<error type>: <message>"
    scrub(report)               NaN and infinity -> None (strict JSON refuses them), each
                                path listed under summary.missing["non_finite"]
    warnings(report, group)     one line per missing entry, for the terminal and the page

A report at a scale nobody tried (16K features x 20 seeds) meets values nobody planned for; a
traceback there loses the hours of matching before it. The core (the pairs, their summary
and the evidence) is not guarded: without it there is no report. User errors (`ConfigError`,
raised while arguments are checked, before anything is matched) are not caught either.
SAEFAST_STRICT=1 (the test suite sets it) re-raises, so a bug is not hidden as a missing
value where it can be seen.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable

from saefast.errors import ConfigError

STRICT_ENV = "SAEFAST_STRICT"
NON_FINITE = "non_finite"


def _strict() -> bool:
    return os.environ.get(STRICT_ENV, "") not in ("", "0")


def _missing(report: dict) -> dict:
    return report.setdefault("summary", {}).setdefault("missing", {})


def guarded(report: dict, step: str, fn: Callable[[], Any]) -> Any:
    """fn() or, when it raises (but a ConfigError, or anything under SAEFAST_STRICT=1),
    None with summary.missing[step] holding why."""
    try:
        return fn()
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - the point: one statistic never sinks the report
        if _strict():
            raise
        first = (str(e).strip().splitlines() or [""])[0][:300]
        _missing(report)[step] = f"{type(e).__name__}: {first}" if first else type(e).__name__
        return None


def _scrub(obj: Any, path: str, found: list[str]) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        found.append(path)
        return None
    if isinstance(obj, dict):
        return {k: _scrub(v, f"{path}.{k}" if path else str(k), found) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_scrub(v, f"{path}[{i}]", found) for i, v in enumerate(obj)]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):  # numpy / torch values
        return _scrub(obj.tolist(), path, found)
    return obj


def scrub(report: dict) -> dict:
    """`report` with every NaN or infinite number replaced by None (in place at the top
    level; nested containers rebuilt), their paths under summary.missing["non_finite"]."""
    found: list[str] = []
    for key in list(report):
        report[key] = _scrub(report[key], key, found)
    if found:
        listed = _missing(report).setdefault(NON_FINITE, [])
        listed.extend(p for p in found if p not in listed)
    return report


def warnings(report: dict, group: str) -> list[str]:
    """One line per missing step (and one for the non-finite values) of `group`'s report."""
    out = []
    for step, why in ((report.get("summary") or {}).get("missing") or {}).items():
        if step == NON_FINITE:
            shown = ", ".join(why[:3]) + (f" and {len(why) - 3} more" if len(why) > 3 else "")
            out.append(f"{group}: {len(why)} value(s) could not be computed and are left "
                       f"empty ({shown})")
        else:
            out.append(f"{group}: the {step} step could not be computed ({why}); the rest of "
                       "the report is written")
    return out
