"""SciPy's own tests of linear_sum_assignment, run on saefast's linear_assignment.

SciPy ships its test modules; their test functions are imported here, so pytest collects
them with their parametrizations, and a fixture points the module's `linear_sum_assignment`
at ours while they run. Its expectations (exact indices for an all-equal matrix, exception
types and messages, costs of small cases, agreement with the csgraph solver on 100 sparse
problems) then hold for ours. A SciPy without its tests skips this file;
tests/test_linear_assignment.py covers the same ground on its own.
"""

import pytest

from saefast.match import linear_assignment

suite = pytest.importorskip("scipy.optimize.tests.test_linear_assignment",
                            reason="this SciPy does not ship its tests")

TESTS = {name: fn for name, fn in vars(suite).items()
         if name.startswith("test_") and callable(fn)}
globals().update(TESTS)  # collected by pytest as tests of this module


@pytest.fixture(autouse=True)
def ours_instead_of_scipys(monkeypatch, request):
    calls = []

    def spy(*args, **kwargs):
        calls.append(args)
        return linear_assignment(*args, **kwargs)

    monkeypatch.setattr(suite, "linear_sum_assignment", spy)
    yield
    if request.function.__name__ in TESTS:
        assert calls, "SciPy's test did not call linear_sum_assignment through its module"


def test_the_suite_was_found():
    assert {"test_constant_cost_matrix", "test_linear_sum_assignment_small_inputs",
            "test_linear_sum_assignment_input_nan"} <= set(TESTS)
