"""The one-call API: find_label_issues over arrays, its doctests, and the CLI's select agreeing."""
import doctest
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import clipcleaner_core
from clipcleaner_core import api, find_label_issues
from clipcleaner_core.errors import ConfigError, DataError
from clipcleaner_core.metrics import make_synthetic_problem


@pytest.fixture(scope="module")
def problem():
    return make_synthetic_problem(500, 4, 16, noise_rate=0.3, spread=1.5, seed=2)


def test_docstring_examples_run():
    for module in (api,):
        failures, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert tried > 0 and failures == 0


def test_zero_shot_is_on_exactly_when_text_features_are_given(problem):
    with_text = find_label_issues(problem["features"], problem["labels"],
                                  text_features=problem["text_features"],
                                  text_labels=problem["text_labels"])
    without = find_label_issues(problem["features"], problem["labels"])
    assert with_text["zs_loss_score"].notna().all()
    assert without["zs_loss_score"].isna().all() and without["lr_loss_score"].notna().all()


def test_class_names_give_the_number_of_classes_and_accept_name_labels(problem):
    names = ["a", "b", "c", "d", "e"]  # class "e" has no samples
    by_name = find_label_issues(problem["features"], np.asarray(names)[problem["labels"]],
                                class_names=names)
    by_id = find_label_issues(problem["features"], problem["labels"], class_names=names)
    pd.testing.assert_frame_equal(by_name, by_id)
    with pytest.raises(DataError, match="not in class_names"):
        find_label_issues(problem["features"], ["zebra"] * 500, class_names=names)


def test_unknown_score_or_probe_lists_the_valid_ones(problem):
    with pytest.raises(ConfigError, match="zs_loss, zs_consistency, lr_loss, lr_consistency"):
        find_label_issues(problem["features"], problem["labels"], scores=["zs_los"])
    with pytest.raises(ConfigError, match="in-sample, cross-val, off"):
        find_label_issues(problem["features"], problem["labels"], probe="insample")
    with pytest.raises(ConfigError, match="need text_features"):
        find_label_issues(problem["features"], problem["labels"], scores=["zs_loss"])


def test_raising_theta_cons_never_grows_the_flagged_set_smaller(problem):
    low = find_label_issues(problem["features"], problem["labels"], theta_cons=0.5)
    high = find_label_issues(problem["features"], problem["labels"], theta_cons=0.95)
    assert (low["is_label_issue"] <= high["is_label_issue"]).all()


def test_package_reexports_the_api():
    assert clipcleaner_core.find_label_issues is api.find_label_issues
    assert clipcleaner_core.clean is api.clean


def test_cli_select_gives_the_same_table(tmp_path, problem):
    paths = {}
    for name in ("features", "labels", "text_features", "text_labels", "true_labels"):
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], problem[name])
    out = tmp_path / "scores.csv"
    subprocess.run([sys.executable, "-m", "clipcleaner_core", "select",
                    "--image-features", paths["features"], "--labels", paths["labels"],
                    "--text-features", paths["text_features"], "--text-labels", paths["text_labels"],
                    "--true-labels", paths["true_labels"], "--theta-cons", "0.7", "--out", out],
                   check=True, capture_output=True)
    from_cli = pd.read_csv(out, keep_default_na=False)
    direct = find_label_issues(problem["features"], problem["labels"],
                               text_features=problem["text_features"],
                               text_labels=problem["text_labels"], theta_cons=0.7,
                               true_labels=problem["true_labels"])
    assert list(from_cli.columns) == list(direct.columns)
    for column in ("is_label_issue", "suggested_label", "given_label", "is_noisy"):
        np.testing.assert_array_equal(from_cli[column].to_numpy(), direct[column].to_numpy())
    np.testing.assert_allclose(from_cli["label_score"], direct["label_score"], rtol=1e-9)


def test_clean_gives_what_the_cli_run_writes(tmp_path):
    import os

    from clipcleaner_core import clean

    cache = tmp_path / "cache"
    result = clean("demo", theta_cons=0.7, cache_root=cache)
    out = tmp_path / "run.csv"
    env = {**os.environ, "CLIPCLEANER_CACHE": str(cache)}
    subprocess.run([sys.executable, "-m", "clipcleaner_core", "run", "--data", "demo", "--model", "pixels",
                    "--theta-cons", "0.7", "--out", out], check=True, capture_output=True, env=env)
    from_cli = pd.read_csv(out, keep_default_na=False)
    assert result.metrics["f1"] > 0.9
    for column in ("index", "is_label_issue", "suggested_label", "final_label"):
        np.testing.assert_array_equal(from_cli[column].to_numpy(), result.table[column].to_numpy())
