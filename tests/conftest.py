"""Shared test setup: every test session gets its own cache folder and no network."""
import os
import tempfile

os.environ.setdefault("CLIPCLEANER_CACHE", tempfile.mkdtemp(prefix="clipcleaner-test-cache-"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
