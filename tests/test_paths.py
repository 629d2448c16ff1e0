"""Data roots: safe defaults, the variable extends them, added roots persist, symlinks resolved."""
import os
from pathlib import Path

import pytest

from clipcleaner_core import paths


@pytest.fixture()
def roots_env(tmp_path, monkeypatch):
    home, cache = tmp_path / "home", tmp_path / "cache"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("CLIPCLEANER_CACHE", str(cache))
    monkeypatch.delenv(paths.DATA_ROOTS_ENV, raising=False)
    return home, cache


def test_defaults_are_the_home_folder_and_the_cache_data_area_never_the_working_folder(roots_env, monkeypatch):
    home, cache = roots_env
    monkeypatch.chdir("/")
    roots = paths.data_roots()
    assert roots == [home.resolve(), (cache / "uploads").resolve(), (cache / "exports").resolve()]
    assert not paths.within_roots("/etc/passwd")


def test_a_home_folder_at_the_file_system_root_is_not_a_root(roots_env, monkeypatch):
    monkeypatch.setenv("HOME", "/")
    assert Path("/") not in paths.data_roots()


def test_the_variable_extends_the_defaults(roots_env, tmp_path):
    home, cache = roots_env
    extra = tmp_path / "datasets"
    extra.mkdir()
    os.environ[paths.DATA_ROOTS_ENV] = f"{extra}{os.pathsep}"
    sources = {entry.path: entry.source for entry in paths.data_root_entries()}
    assert sources[extra.resolve()] == paths.DATA_ROOTS_ENV
    assert home.resolve() in sources and paths.exports_dir().resolve() in sources  # still there


def test_added_roots_are_remembered_and_can_be_removed(roots_env, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    assert not paths.within_roots(shared / "x.png")
    paths.add_data_root(shared)
    assert paths.within_roots(shared / "x.png") and shared.resolve() in paths.added_roots()
    with pytest.raises(ValueError, match="file-system root"):
        paths.add_data_root("/")
    with pytest.raises(ValueError, match="not an existing folder"):
        paths.add_data_root(tmp_path / "missing")
    assert paths.remove_data_root(shared) and not paths.within_roots(shared / "x.png")


def test_symlinks_are_resolved_before_the_check(roots_env, tmp_path):
    home, _ = roots_env
    outside = tmp_path / "outside"
    (outside / "cat").mkdir(parents=True)
    (outside / "cat" / "0.png").write_bytes(b"x")
    (home / "pets").mkdir()
    (home / "pets" / "cat").symlink_to(outside / "cat", target_is_directory=True)
    (home / "pets" / "dog").mkdir()
    (home / "pets" / "dog" / "0.png").write_bytes(b"x")
    (home / "pets" / "dog" / "1.png").symlink_to(outside / "cat" / "0.png")
    assert not paths.within_roots(home / "pets" / "cat")
    found = paths.paths_outside_roots([home / "pets" / "cat" / "0.png", home / "pets" / "dog" / "0.png",
                                       home / "pets" / "dog" / "1.png"])
    assert [(str(f), str(r)) for f, r in found] == [
        (str(home / "pets" / "cat" / "0.png"), str((outside / "cat" / "0.png").resolve())),
        (str(home / "pets" / "dog" / "1.png"), str((outside / "cat" / "0.png").resolve()))]
