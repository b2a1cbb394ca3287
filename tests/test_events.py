"""sweep/events.py and its sinks (cli.tables.RichEvents, cli.plain_events.PlainEvents,
sweep.seed_worker.PipeEvents, sweep.ray.tasks.StepsToBoard): every sink is an `Events`
subclass, so an event that does not exist (a misspelt name) is an AttributeError, never
dropped silently. A console that is not a terminal gets plain lines, not rich's bars."""

import io
import os

import pytest
from rich.console import Console

from saefast.cli.plain_events import PlainEvents
from saefast.cli.tables import RichEvents
from saefast.sweep.events import Events
from saefast.sweep.ray.tasks import StepsToBoard
from saefast.sweep.seed_worker import PipeEvents

EVENTS = {name for name in vars(Events) if not name.startswith("_")}


def _sinks():
    return [Events(), RichEvents(Console(file=io.StringIO(), force_terminal=True)),
            PlainEvents(Console(file=io.StringIO())), PipeEvents(io.BytesIO(), os.getppid()),
            StepsToBoard(None, "pass 0")]


def test_events_are_no_ops_a_sink_overrides():
    e = Events()
    assert EVENTS == {"harvest_started", "harvest_progress", "pass_started", "run_step",
                      "run_evaluation", "run_finished", "report_started", "report_step", "report_pair", "message",
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


@pytest.mark.parametrize("cls, extra", [(RichEvents, {"close"}), (PlainEvents, {"close"}),
                                        (PipeEvents, set()), (StepsToBoard, set())])
def test_a_sink_defines_only_events_that_exist(cls, extra):
    """A misspelt definition would never be called: every public method a sink defines is
    an event of `Events` (or, for the CLI's, close)."""
    own = {n for n, v in vars(cls).items() if callable(v) and not n.startswith("_")}
    assert own - EVENTS <= extra, own - EVENTS - extra


def test_the_report_steps_bar_shows_no_remaining_time_and_the_pairs_bar_does():
    """Report steps differ ~1000x in cost (the pairs take minutes at 16K features, most steps
    a second), so a rate over steps would promise a wrong time; the pairs' rate does not."""
    from saefast.cli.tables import _Remaining

    events = RichEvents(Console(file=io.StringIO(), width=200, force_terminal=True))
    events.report_step("g", "pairs", 0, 9)
    events.report_pair("g", 3, 190)
    column = _Remaining()
    steps, pairs = (events.report.tasks[i] for i in (0, 1))
    assert steps.description == "report steps" and pairs.description == "pairs"
    assert column.render(steps).plain == ""
    assert column.render(pairs).plain != ""
    events.close()


def test_a_console_that_is_not_a_terminal_gets_plain_lines():
    assert type(RichEvents(Console(file=io.StringIO()))) is PlainEvents
    assert type(RichEvents(Console(file=io.StringIO(), force_terminal=True))) is RichEvents


def test_plain_lines_say_each_phase_and_a_long_one_every_30_seconds():
    """Passes, runs and report steps a line each; steps and pairs, which come many times a
    second, a line only when 30 s have passed since the last."""
    from saefast.sweep.events import RunOutcome

    now = [0.0]
    buf = io.StringIO()
    events = PlainEvents(Console(file=buf, width=40), clock=lambda: now[0])
    events.pass_started("g seeds 1,2", 2, 0, 1)
    stats = {"tokens_per_second": 1000.0, "loss": 0.5, "dead": 0.0}
    for step in range(1, 200):  # 199 steps over 99.5 s: lines at 30, 60, 90 s
        now[0] += 0.5
        events.run_step(step, 200, stats)
    spec = type("Spec", (), {"name": "a-very-long-run-name-that-does-not-fit-40-columns-s1"})()
    metrics = {"held_out": {"fvu": 0.25, "dead_fraction": 0.5}, "train_seconds": 100.0}
    events.run_finished(RunOutcome(spec, "done", metrics=metrics))
    events.report_started("g")
    events.report_step("g", "pairs", 0, 3)
    events.report_pair("g", 1, 10)
    events.close()
    lines = buf.getvalue().splitlines()
    assert lines[0] == "pass 1/1: g seeds 1,2 (2 SAEs together)"
    assert [ln.split(",")[0] for ln in lines[1:4]] == [
        "  step 60/200 (30%)", "  step 120/200 (60%)", "  step 180/200 (90%)"]
    assert lines[4] == (f"run {spec.name}: trained, held-out FVU 0.25, dead 50%, "
                        "1 min 40 s of training")  # whole, though wider than the console
    assert lines[5:] == ["matching pairs of g", "  g: report step 1/3: pairs (0 s)"]


def test_plain_lines_of_a_long_phase_say_the_time_left_at_the_rate_so_far():
    """Steps (from a resumed pass's first step, not from 0), the firing-count pass after
    training, and pairs: a line every 30 s with the time left at the phase's own rate."""
    now = [0.0]
    buf = io.StringIO()
    events = PlainEvents(Console(file=buf), clock=lambda: now[0])
    events.pass_started("g seeds 1,2", 2, 0, 1)
    stats = {"tokens_per_second": 1000.0, "loss": 0.5, "dead": 0.0}
    for step in range(100, 200):  # resumed at step 100; one step a second
        events.run_step(step, 400, stats)
        now[0] += 1.0
    events.run_evaluation(0, 1000)  # then 10 tokens a second
    for done in range(10, 1000, 10):
        now[0] += 1.0
        events.run_evaluation(done, 1000)
    events.report_started("g")
    events.report_step("g", "pairs", 0, 3)
    for done in range(1, 10):  # a pair every 20 s
        now[0] += 20.0
        events.report_pair("g", done, 10)
    lines = buf.getvalue().splitlines()
    steps = [ln for ln in lines if ln.startswith("  step ")]
    assert steps[0].startswith("  step 130/400 (32%), 30 s, ~4 min 30 s left: ")  # 270 steps at 1/s
    counting = lines.index("  counting firings over the 1,000 training tokens")
    assert lines[counting + 1] == "  firing counts: 300/1,000 tokens (30%), 30 s, ~70 s left"
    pairs = [ln for ln in lines if "pairs matched" in ln]
    assert pairs[0] == "  g: 2/10 pairs matched, 40 s, ~2 min 40 s left"  # 8 pairs at 20 s


def test_the_time_left_follows_the_last_minutes_not_a_fast_start():
    """A resumed report reads its first 60 pairs from the matching cache in a second, then
    matches one every 20 s: ten minutes on, the time left is the slow rate's."""
    now = [0.0]
    buf = io.StringIO()
    events = PlainEvents(Console(file=buf), clock=lambda: now[0])
    events.report_started("g")
    for done in range(1, 61):
        now[0] += 0.01
        events.report_pair("g", done, 190)
    for done in range(61, 91):
        now[0] += 20.0
        events.report_pair("g", done, 190)
    last = [ln for ln in buf.getvalue().splitlines() if "pairs matched" in ln][-1]
    assert last == "  g: 90/190 pairs matched, 10 min 01 s, ~33 min 20 s left"  # 100 x 20 s


def test_the_steps_bar_counts_the_firing_pass_with_its_own_clock():
    events = RichEvents(Console(file=io.StringIO(), width=200, force_terminal=True))
    events.pass_started("g seeds 1,2", 2, 0, 1)
    events.run_step(50, 50, {"tokens_per_second": 1.0, "loss": 0.5, "dead": 0.0})
    events.run_evaluation(0, 1000)
    events.run_evaluation(400, 1000)
    task = events.progress.tasks[1]
    assert (task.description, task.completed, task.total) == ("firing counts", 400, 1000)
    events.pass_started("g seeds 3,4", 2, 1, 2)  # the next pass counts steps again
    assert events.progress.tasks[1].description == "steps"
    events.close()


def test_plain_cluster_lines_say_each_finished_task_and_otherwise_every_30_seconds():
    from saefast.sweep.events import ClusterProgress

    now = [0.0]
    buf = io.StringIO()
    events = PlainEvents(Console(file=buf), clock=lambda: now[0])

    def progress(done, running):
        return ClusterProgress(passes={"queued": 2 - done - running, "running": running,
                                       "done": done, "failed": 0},
                               pairs={"queued": 0, "running": 0, "done": 0, "failed": 0},
                               nodes={})

    events.cluster_progress(progress(0, 1))  # the first: said
    for _ in range(10):  # polled twice a second with nothing new: quiet
        now[0] += 0.5
        events.cluster_progress(progress(0, 1))
    events.cluster_progress(progress(1, 1))  # a pass finished: said at once
    now[0] += 31
    events.cluster_progress(progress(1, 1))  # nothing new, but 30 s on: said
    lines = buf.getvalue().splitlines()
    assert len(lines) == 3 and all(ln.startswith("Ray cluster: passes ") for ln in lines)
    assert "1 done" in lines[1] and "pair batches 0 queued" in lines[1]


def test_a_sweep_into_a_log_file_writes_readable_lines(corpus, tmp_path):
    """`saefast sweep ... > log 2>&1`: a line per pass and run, then the summary; no
    spinner frame, nothing cut with an ellipsis."""
    import subprocess
    import sys

    log = tmp_path / "log.txt"
    argv = [sys.executable, "-m", "saefast.cli.main", "sweep", "--model", "tiny",
            "--hook", "blocks.0.hook_resid_pre", "--corpus", str(corpus), "--tokens", "800",
            "--features", "16", "--k", "2", "--epochs", "2", "--seeds", "3",
            "--no-trained-null", "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c")]
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    with open(log, "w") as f:
        rc = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, env=env,
                            check=False).returncode
    text = log.read_text()
    assert rc == 0, text
    assert not any(0x2800 <= ord(c) <= 0x28FF for c in text), text  # rich's spinner frames
    assert "…" not in text and "\x1b[" not in text, text
    lines = text.splitlines()
    assert "harvested 800 tokens in" in text and "pass 1/1: " in text, text
    for seed in (1, 2, 3):
        trained = [ln for ln in lines if ln.startswith("run ") and f"-s{seed}: trained, " in ln]
        assert len(trained) == 1, text
    assert "3 trained, 0 already done, 0 failed" in " ".join(text.split()), text
    assert "HTML report: " in text


def test_durations_round_whole_seconds_before_splitting_minutes():
    from saefast.cli.progress_text import duration, remaining

    assert duration(119.6) == "2 min 00 s"  # not "1 min 60 s"
    assert duration(89.4) == "89 s" and duration(89.6) == "1 min 30 s"
    assert duration(247.0) == "4 min 07 s"
    assert duration(7200) == "2.0 h"
    assert remaining(0, 0.0, 10, 10.0, 20) == ", ~10 s left"
