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
    "clipcleaner_core.data.manifest",
    "clipcleaner_core.data.demo",
    "clipcleaner_core.data.noise",
    "clipcleaner_core.neighbours",
    "clipcleaner_core.knn_index",
    "clipcleaner_core.projection",
    "clipcleaner_core.pipeline",
    "clipcleaner_core.accel",
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


def test_the_readme_python_section_runs_as_written(tmp_path, monkeypatch):
    from pathlib import Path

    monkeypatch.chdir(tmp_path)  # it writes scores.csv; the cache is this test's own
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    section = "\n".join("" if line.startswith("```") else line for line in section.splitlines())
    test = doctest.DocTestParser().get_doctest(section, {}, "README.md#python", "README.md", 0)
    assert len(test.examples) > 10
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} README examples failed"
