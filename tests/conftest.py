"""Shared test setup: every test session gets its own cache folder and no network."""
import os
import tempfile

if os.environ.get("PYTEST_XDIST_WORKER"):  # each parallel worker its own cache and catalogue
    os.environ["CLIPCLEANER_CACHE"] = tempfile.mkdtemp(
        prefix=f"clipcleaner-test-cache-{os.environ['PYTEST_XDIST_WORKER']}-")
else:
    os.environ.setdefault("CLIPCLEANER_CACHE", tempfile.mkdtemp(prefix="clipcleaner-test-cache-"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
