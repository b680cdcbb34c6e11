"""schedule.py: every default schedule, by name, and which are due in a step."""

from rnndoctor.schedule import AFTER_NAN, SCHEDULES, StepSchedules, first_then_every, flush_schedule


def test_first_then_every_is_dense_then_sampled():
    s = first_then_every(3, 10)
    assert [n for n in range(35) if s(n)] == [0, 1, 2, 10, 20, 30]
    assert str(s) == "first 3 steps, then every 10th"
    assert [n for n in range(5) if first_then_every(2, 0)(n)] == [0, 1]  # every 0: only the start


def test_flush_early_and_often_then_every_interval():
    s = flush_schedule(100)
    assert [n for n in range(450) if s(n)] == [0, 1, 2, 3, 5, 10, 20, 50, 100, 200, 300, 400]


def test_step_schedules_answer_per_step_and_go_dense_after_a_nan():
    due = StepSchedules({"a": first_then_every(1, 50), "localize": first_then_every(1, 50)}, after_nan=frozenset({"localize"}))
    due.at(0)
    assert due.due("a") and due.due("localize")
    due.at(7)
    assert not due.due("a") and not due.due("localize")
    due.nan_seen = True
    due.at(7)
    assert not due.due("a") and due.due("localize")
    assert not due.due("no-such-schedule")


def test_every_default_is_named_once():
    assert set(AFTER_NAN) <= set(SCHEDULES)
    assert StepSchedules().schedules == SCHEDULES  # the defaults are these, not copies elsewhere
