"""The app's store of fitted results: one computation per key, other keys never wait for it."""
import threading
import time

import pytest

from ui.state import PreparedStore


def test_other_keys_do_not_wait_while_one_computes_and_the_same_key_computes_once():
    store = PreparedStore()
    release, started, calls = threading.Event(), threading.Event(), []

    def slow():
        calls.append("a")
        started.set()
        assert release.wait(10)
        return "A"

    results = {}
    first = threading.Thread(target=lambda: results.setdefault("first", store.get("a", slow)))
    second = threading.Thread(target=lambda: results.setdefault("second", store.get("a", slow)))
    first.start()
    assert started.wait(10)
    second.start()
    begun = time.monotonic()
    assert store.get("b", lambda: "B") == "B"  # not held up by the computation of "a"
    assert time.monotonic() - begun < 1
    release.set()
    first.join(10)
    second.join(10)
    assert results == {"first": "A", "second": "A"} and calls == ["a"]


def test_a_failed_computation_stores_nothing_and_the_oldest_entries_are_evicted():
    store = PreparedStore(entries=2)

    def boom():
        raise RuntimeError("fit failed")

    with pytest.raises(RuntimeError):
        store.get("a", boom)
    assert store.get("a", lambda: 1) == 1
    store.get("b", lambda: 2)
    store.get("a", lambda: -1)  # a hit makes "a" the most recent
    store.get("c", lambda: 3)  # evicts "b", the least recently used
    assert store.get("a", lambda: -1) == 1
    assert store.get("b", lambda: 22) == 22
