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
