"""sweep/events.py and its sinks (cli.tables.RichEvents, sweep.seed_worker.PipeEvents,
sweep.ray.tasks.StepsToBoard): every sink is an `Events` subclass, so an event that does not
exist (a misspelt name) is an AttributeError, never dropped silently."""

import io
import os

import pytest
from rich.console import Console

from saefast.cli.tables import RichEvents
from saefast.sweep.events import Events
from saefast.sweep.ray.tasks import StepsToBoard
from saefast.sweep.seed_worker import PipeEvents

EVENTS = {name for name in vars(Events) if not name.startswith("_")}


def _sinks():
    return [Events(), RichEvents(Console(file=io.StringIO())),
            PipeEvents(io.BytesIO(), os.getppid()), StepsToBoard(None, "pass 0")]


def test_events_are_no_ops_a_sink_overrides():
    e = Events()
    assert EVENTS == {"harvest_started", "harvest_progress", "pass_started", "run_step",
                      "run_finished", "report_started", "report_step", "report_pair", "message",
                      "cluster_progress"}
    assert e.message("hello") is None and e.report_started("g") is None


@pytest.mark.parametrize("sink", _sinks(), ids=lambda s: type(s).__name__)
def test_a_misspelt_event_raises(sink):
    assert isinstance(sink, Events)
    with pytest.raises(AttributeError):
        sink.run_stpe(1, 2, {})
    with pytest.raises(AttributeError):
        sink.pass_startd("g seeds 1,2", 2, 0, 1)
    sink.report_started("g")  # an event the sink does not draw is Events' no-op
    if hasattr(sink, "close"):
        sink.close()


@pytest.mark.parametrize("cls, extra", [(RichEvents, {"close"}), (PipeEvents, set()),
                                        (StepsToBoard, set())])
def test_a_sink_defines_only_events_that_exist(cls, extra):
    """A misspelt definition would never be called: every public method a sink defines is
    an event of `Events` (or, for RichEvents, close)."""
    own = {n for n, v in vars(cls).items() if callable(v) and not n.startswith("_")}
    assert own - EVENTS <= extra, own - EVENTS - extra


def test_the_report_steps_bar_shows_no_remaining_time_and_the_pairs_bar_does():
    """Report steps differ ~1000x in cost (the pairs take minutes at 16K features, most steps
    a second), so a rate over steps would promise a wrong time; the pairs' rate does not."""
    from saefast.cli.tables import _Remaining

    events = RichEvents(Console(file=io.StringIO(), width=200))
    events.report_step("g", "pairs", 0, 9)
    events.report_pair("g", 3, 190)
    column = _Remaining()
    steps, pairs = (events.report.tasks[i] for i in (0, 1))
    assert steps.description == "report steps" and pairs.description == "pairs"
    assert column.render(steps).plain == ""
    assert column.render(pairs).plain != ""
    events.close()
