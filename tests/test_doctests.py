"""The Examples sections of the public functions run as doctests, so the documentation cannot
drift from the code (the one-call API's own are in test_api.py)."""
import doctest
import importlib

import pytest

MODULES = (
    "clipcleaner_core.scoring",
    "clipcleaner_core.selection",
    "clipcleaner_core.gmm",
    "clipcleaner_core.metrics",
    "clipcleaner_core.presets",
    "clipcleaner_core.probe",
    "clipcleaner_core.export",
    "clipcleaner_core.embed",
    "clipcleaner_core.data.sources",
    "clipcleaner_core.neighbours",
    "clipcleaner_core.knn_index",
    "clipcleaner_core.projection",
)


@pytest.mark.parametrize("name", MODULES)
def test_examples_run_as_written(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an example that writes a file writes it here
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = [t for t in finder.find(module, name, globs={}) if t.examples]
    assert tests, f"{name} has no examples"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed"
