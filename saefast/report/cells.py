"""How a number is written in a table cell. The terminal tables (cli/tables.py) and the HTML
page (report/html_groups.py) both use these, so a number reads the same in both. Plain strings:
no markup, no escaping (each caller escapes for its medium)."""

from __future__ import annotations

from typing import Any

# the order every table lists them in (the dictionary-covariance and spectrum-matched nulls
# last: added later, so the others keep their places)
NULL_KINDS = ("isotropic", "covariance", "activations", "dictionary", "spectrum")
SHORT = {"isotropic": "iso", "covariance": "cov", "activations": "act", "dictionary": "dict",
         "spectrum": "spec",
         "trained": "trained", "trained_elliptical": "trained ell"}
DATA_KINDS = NULL_KINDS[:3]  # the nulls of the data, before the dictionary null
# the trained null's kinds (summary.nulls.kinds; not in the evidence): a table of their own
TRAINED_KINDS = ("trained", "trained_elliptical")


def fmt(value: Any, digits: int = 3) -> str:
    """A float to `digits` places, None as "-", anything else as str()."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def signed(x: float) -> str:
    return f"{x:+.2f}".replace("0.", ".")


def _finite(ci) -> bool:
    return bool(ci) and all(c is not None and c == c for c in ci)  # NaN: too few runs left


def excess_cell(excess: dict | None) -> str:
    """"+.12 [+.08,+.16]": an excess over a null with its interval; "-" when there is none."""
    if not excess or excess.get("estimate") is None:
        return "-"
    ci = excess.get("ci")
    if not _finite(ci):
        return signed(excess["estimate"])
    return f"{signed(excess['estimate'])} [{signed(ci[0])},{signed(ci[1])}]"


def value_cell(value: float | None, ci=None) -> str:
    """".45 [.40,.50]": a value in [0, 1] (a share, a correlation) with its interval when
    there is one; "-" without a value."""
    if value is None:
        return "-"
    cell = _two_places(value)
    if _finite(ci):
        cell += f" [{_two_places(ci[0])},{_two_places(ci[1])}]"
    return cell


def _two_places(x: float) -> str:
    """".45", "-.07"; a value that is not 0 but rounds to it keeps a third place (".003",
    "-.004") and an exact 0 is "0": never ".00" or "-.00" for something that is not."""
    if x == 0:
        return "0"
    for places in (2, 3):
        text = f"{x:.{places}f}"
        if float(text) != 0:
            return text.replace("0.", ".", 1)
    return "<.001" if x > 0 else ">-.001"


def share_cell(entry: dict | None) -> str:
    """".45 [.40,.50]": a share beyond chance {share, share_ci}; "-" when there is none."""
    return value_cell((entry or {}).get("share"), (entry or {}).get("share_ci"))


def ci_cell(ci) -> str:
    """".295-.325": a 90 % interval of a median; "-" without one."""
    return f"{ci[0]:.3f}-{ci[1]:.3f}".replace("0.", ".") if ci else "-"


def fractions_cell(frac: dict | None) -> str:
    """".10/.02/.00": the fractions of matched pairs at >= .5/.7/.9."""
    if not frac:
        return "-"
    return "/".join(fmt(frac.get(t), 2).lstrip("0") for t in ("0.5", "0.7", "0.9"))


def bare(value: float | None) -> str:
    """".122": a cosine without its leading zero; "-" without a value."""
    return fmt(value).replace("0.", ".")


def null_medians_cell(medians: dict, kinds=DATA_KINDS) -> str:
    """".122/.295/.238": the isotropic / covariance / activation null medians (the terminal's
    nulls table; the dictionary null has a table of its own there)."""
    return "/".join(bare(medians.get(k)) for k in kinds)


def pw_mcc_line(row: dict) -> str | None:
    """"PW-MCC .301 [.295-.307]; over the nulls +.21 [+.20,+.22] / ... / -": a summary.json
    row's PW-MCC with its 90 % interval and its excess over the isotropic / covariance /
    activation / dictionary-covariance / spectrum-matched nulls; None without one."""
    if row.get("pw_mcc") is None:
        return None
    over = row.get("excess_pw_mcc_by_null") or {}
    if not over and row.get("excess_pw_mcc") is not None:  # no nulls block: the isotropic one
        over = {"isotropic": {"estimate": row["excess_pw_mcc"], "ci": row.get("excess_pw_mcc_ci")}}
    ci = row.get("pw_mcc_ci")
    value = bare(row["pw_mcc"]) + (f" [{ci_cell(ci)}]" if _finite(ci) else "")
    return (f"PW-MCC {value}; over the {'/'.join(SHORT[k] for k in NULL_KINDS)} nulls "
            + " / ".join(excess_cell(over.get(k)) for k in NULL_KINDS))


def floor_cell(floor: dict | None) -> str:
    """".01/.12": a floor's mean / 95 % quantile (`stats.view_nulls`); "-" without one."""
    if not floor or floor.get("mean") is None:
        return "-"
    return f"{_two_places(floor['mean'])}/{_two_places(floor['q95'])}"


def interval_cell(entry: dict | None) -> str:
    """".85 [.70,.95]": an {estimate, ci} entry in [0, 1] (`value_cell`); "-" without one."""
    return value_cell((entry or {}).get("estimate"), (entry or {}).get("ci"))
