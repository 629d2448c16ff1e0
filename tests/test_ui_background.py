"""Background tasks report progress, finish with a result or error, and stop when cancelled."""
import time

from clipcleaner_core.errors import Cancelled, DataError
from ui.background import BackgroundTask, Progress, describe


def test_result_and_progress_reported():
    def work(progress, cancel):
        progress("embed", 50, 100, 25.0)
        return "done"

    task = BackgroundTask(work).start()
    assert task.wait(5)
    assert task.result == "done" and task.error is None and not task.cancelled
    assert task.progress.fraction == 0.5
    assert describe(task.progress) == "Embedding 50/100 images · 25 images/s · 2 s left"


def test_cancel_sets_the_flag_the_core_polls():
    def work(progress, cancel):
        while not cancel():
            time.sleep(0.01)
        raise Cancelled("stopped")

    task = BackgroundTask(work).start()
    assert task.running
    task.cancel()
    assert task.wait(5) and task.cancelled and task.error is None


def test_errors_are_kept_for_the_page():
    def work(progress, cancel):
        raise DataError("bad image folder")

    task = BackgroundTask(work).start()
    assert task.wait(5) and isinstance(task.error, DataError)


def test_time_left_formatting():
    assert "1 min 40 s left" in describe(Progress("embed", 0, 1000, 10.0))
    assert describe(Progress("fit", 0, 1)) == "Fitting the zero-shot and linear-probe scores"


def test_rate_and_time_left_are_measured_when_the_core_gives_no_rate(monkeypatch):
    from ui import background

    clock = iter([0.0, 10.0])  # first report, second report (seconds after the start)
    monkeypatch.setattr(background.time, "monotonic", lambda: next(clock))
    task = BackgroundTask(lambda progress, cancel: None, label="probe", started=0.0)
    task._report("probe", 0, 300)
    task._report("probe", 50, 300)
    assert task.progress.rate == 5.0 and task.progress.seconds_left == 50.0
    assert describe(task.progress) == ("Fitting the linear probe 50/300 iterations · 5.0 iterations/s · "
                                       "50 s left · 10 s so far")


def test_shared_tasks_are_one_per_key_until_forgotten():
    from ui import background

    calls = []

    def work(progress, cancel):
        calls.append(1)
        return len(calls)

    first = background.shared("test-key", work)
    assert background.shared("test-key", work) is first and first.wait(5)
    assert first.result == 1 and not background.pending()
    background.forget("test-key", first)
    second = background.shared("test-key", work)
    assert second is not first and second.wait(5) and second.result == 2
    background.forget("test-key")
