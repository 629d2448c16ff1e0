"""Shared test setup: every test gets its own cache folder (so its own catalogue), and no network.

The app tests (``test_app_*``) open the built-in demo, whose embedding and fit take a few seconds;
each test process computes them once into a template folder, and every app test starts from its
own copy of it (without the catalogue). A test therefore only reads the shared fit, and whatever
it writes (review decisions, exports, jobs, maps, other fits) stays in its own folder.
"""
import os
import shutil
import tempfile

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# What runs outside a test (collection, module-scoped fixtures) uses one folder per process.
os.environ["CLIPCLEANER_CACHE"] = tempfile.mkdtemp(
    prefix=f"clipcleaner-test-cache-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-")

CATALOGUE_FILES = ("catalogue.sqlite", "catalogue.sqlite-wal", "catalogue.sqlite-shm")


@pytest.fixture(scope="session")
def demo_cache_template(tmp_path_factory):
    """A cache folder holding the demo's embedding and fit, as the app computes them on first open."""
    from clipcleaner_core.data import load_dataset
    from clipcleaner_core.encoders import EncoderSpec
    from clipcleaner_core.pipeline import prepare

    folder = tmp_path_factory.mktemp("demo-cache-template")
    prepare(load_dataset("demo"), EncoderSpec(model="pixels"), cache_root=folder)
    return folder


@pytest.fixture(autouse=True)
def own_cache(request, tmp_path_factory, monkeypatch):
    """This test's cache folder (``$CLIPCLEANER_CACHE``): empty, or for an app test a copy of the
    demo template. Not under ``tmp_path``, so a test's own files are never mixed with it."""
    cache = tmp_path_factory.mktemp("cache")
    if request.module.__name__.startswith("test_app_"):
        shutil.copytree(request.getfixturevalue("demo_cache_template"), cache, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(*CATALOGUE_FILES, ".lock"))
    monkeypatch.setenv("CLIPCLEANER_CACHE", str(cache))
    return cache
