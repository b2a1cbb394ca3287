"""The errors a user can cause, and only those.

Every error that bad input, a bad config or a broken file can cause is a `SaefastError`; the
CLI prints exactly these as one line (`error: ...`, exit 2). Anything else is a bug in
saefast and keeps its traceback. Each class also derives from the builtin a Python caller
would expect (ValueError, RuntimeError), so `except ValueError` keeps working.
"""

from __future__ import annotations


class SaefastError(Exception):
    """Base of every user error: the message is one line a person can act on."""


def first_line(err: BaseException) -> str:
    """An underlying error, cut to one line for a SaefastError's message."""
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:200]


class ConfigError(SaefastError, ValueError):
    """A config key, value or experiment file that is not valid."""


class CorpusError(SaefastError, ValueError):
    """A corpus that cannot be read: unknown name, missing path, empty, too short."""


class ModelError(SaefastError, ValueError):
    """A model that cannot be loaded: unknown name, missing optional package, bad directory."""


class HookError(SaefastError, ValueError):
    """A hook name the model does not have."""


class StoreError(SaefastError, ValueError):
    """An activation store that is missing, corrupt, or smaller than asked."""


class ActivationError(SaefastError, ValueError):
    """Activations that cannot be trained on: none left after the held-out slice, NaN or
    infinite values (a model that overflowed, a corrupt source)."""


class RunDirError(SaefastError, ValueError):
    """A run directory that cannot be read: missing, corrupt or inconsistent files."""


class MatchError(SaefastError, ValueError):
    """Dictionaries that cannot be matched as asked: shapes, dtypes, NaNs, an unavailable solver."""


class OutputError(SaefastError, ValueError):
    """An output or cache folder that cannot be written: a file in its place, no permission."""


class NativeRequiredError(SaefastError, ImportError):
    """SAEFAST_REQUIRE_NATIVE=1 and the native ops did not load."""


class MemoryBudgetError(SaefastError, RuntimeError):
    """Even one seed does not fit the memory budget."""


class SweepError(SaefastError, RuntimeError):
    """A sweep that cannot go on: conflicting run dirs, output paths that are files."""


class ExecutorError(SaefastError, RuntimeError):
    """An executor that cannot run a sweep: Ray not installed, a cluster that cannot be
    reached or that lacks what the runs need (GPUs, a shared filesystem)."""
