"""Neighbour evidence: the kNN index (exact against scikit-learn, approximate against exact), the
neighbour scores, near-duplicates, outliers and similarity search, each on a planted case."""
import dataclasses

import numpy as np
import pytest

from clipcleaner_core import knn_index, neighbours
from clipcleaner_core.errors import ConfigError, DataError
from clipcleaner_core.presets import PRESETS
from clipcleaner_core.scoring import ScoringConfig, fit_scores, load_fit, save_fit
from clipcleaner_core.selection import SelectionConfig, available_scores, score_table, select


def unit(a):
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


def clusters(n=600, k=6, dim=32, spread=0.25, seed=0):
    """Tight, well separated class clusters: (features, labels, centres)."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((k, dim)))
    labels = np.arange(n) % k
    features = unit(centres[labels] + spread * rng.standard_normal((n, dim)) / np.sqrt(dim))
    return features, labels.astype(np.int64), centres


def recall(found, truth):
    return np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, truth)])


def test_exact_graph_equals_scikit_learn_brute_force():
    from sklearn.neighbors import NearestNeighbors

    features, _, _ = clusters(500, seed=1)
    graph = neighbours.NeighbourIndex(features, method="exact").graph(10)
    distances, indices = NearestNeighbors(n_neighbors=11, metric="cosine", algorithm="brute").fit(
        features).kneighbors(features)
    assert graph.indices.shape == (500, 10) and graph.indices.dtype == np.int32
    assert not (graph.indices == np.arange(500)[:, None]).any()  # never itself
    np.testing.assert_allclose(graph.similarities, 1 - distances[:, 1:], atol=1e-5)
    assert recall(graph.indices, indices[:, 1:]) > 0.999  # equal up to ties
    assert (np.diff(graph.similarities, axis=1) <= 1e-7).all()  # nearest first


def test_exact_search_memory_is_blocked(monkeypatch):
    """Row blocks of at most BLOCK_BYTES of similarities: a tiny budget gives the same graph."""
    features, _, _ = clusters(300, seed=2)
    whole = neighbours.NeighbourIndex(features, method="exact").graph(5)
    monkeypatch.setattr(knn_index, "BLOCK_BYTES", 4 * 300 * 7)  # 7 rows per block
    assert knn_index._exact_block_rows(300) == 7
    blocked = neighbours.NeighbourIndex(features, method="exact").graph(5)
    np.testing.assert_array_equal(whole.indices, blocked.indices)


def test_approximate_graph_recall_against_exact_search():
    features, _, _ = clusters(6000, k=40, dim=64, spread=1.0, seed=3)
    exact = neighbours.NeighbourIndex(features, method="exact").graph(10)
    approximate = neighbours.NeighbourIndex(features, method="approximate").graph(10)
    assert approximate.method == "approximate" and approximate.indices.shape == (6000, 10)
    assert not (approximate.indices == np.arange(6000)[:, None]).any()
    assert recall(approximate.indices, exact.indices) >= 0.95
    queries = features[:50] + 0.01
    found, _ = neighbours.NeighbourIndex(features, method="approximate").search(unit(queries), 10)
    truth, _ = neighbours.NeighbourIndex(features, method="exact").search(unit(queries), 10)
    assert recall(found, truth) >= 0.95


def test_the_graph_searches_each_sample_as_a_query_would_on_clip_like_data(monkeypatch):
    # anisotropic (a shared direction), many small classes, noisy: the lists nearest a sample
    # are often not the lists nearest its own list's centre; the graph must probe the former
    rng = np.random.default_rng(5)
    centres, shared = rng.standard_normal((300, 64)), 3 * rng.standard_normal(64)
    features = unit(centres[rng.integers(0, 300, 8000)] + shared
                    + 1.2 * rng.standard_normal((8000, 64))).astype(np.float32)
    exact = neighbours.NeighbourIndex(features, method="exact").graph(10)
    index = neighbours.NeighbourIndex(features, method="approximate")
    graph = index.graph(10)
    found, _ = index.search(features, 11)
    queried = np.array([row[row != i][:10] for i, row in enumerate(found)])
    assert abs(recall(graph.indices, exact.indices) - recall(queried, exact.indices)) < 1e-3
    np.testing.assert_allclose(graph.similarities,
                               np.einsum("nd,nkd->nk", features, features[graph.indices]), atol=1e-5)
    assert (np.diff(graph.similarities, axis=1) <= 0).all()  # nearest first
    from clipcleaner_core import knn_index

    monkeypatch.setattr(knn_index, "BLOCK_BYTES", 4096)  # every list's samples in small blocks
    blocked = neighbours.NeighbourIndex(features, method="approximate").graph(10)
    # the same neighbours; a near-tie may swap where BLAS rounds a smaller product differently
    np.testing.assert_allclose(blocked.similarities, graph.similarities, atol=1e-5)
    assert (blocked.indices == graph.indices).mean() > 0.999


def test_a_cached_fit_on_an_older_approximate_graph_is_not_reused(monkeypatch):
    from clipcleaner_core import knn_index, pipeline

    scoring = ScoringConfig(neighbours=10)
    args = ("embedding", np.arange(300) % 6, np.ones(300, dtype=bool), None, None, scoring)
    exact = pipeline._fit_key(*args)
    monkeypatch.setattr(knn_index, "GRAPH_VERSION", knn_index.GRAPH_VERSION + 1)
    assert pipeline._fit_key(*args) == exact  # exact graphs did not change: the fit is kept
    monkeypatch.setattr(knn_index, "EXACT_MAX_ROWS", 100)  # these 300 rows now search approximately
    newer = pipeline._fit_key(*args)
    monkeypatch.setattr(knn_index, "GRAPH_VERSION", knn_index.GRAPH_VERSION - 1)
    assert pipeline._fit_key(*args) != newer


def test_auto_picks_exact_for_small_data_and_rejects_unknown_methods():
    features, _, _ = clusters(100)
    assert neighbours.NeighbourIndex(features).method_ == "exact"
    with pytest.raises(ConfigError, match="valid: auto, exact, approximate"):
        neighbours.NeighbourIndex(features, method="hnsw")
    with pytest.raises(DataError, match="dimension 5"):
        neighbours.NeighbourIndex(features).search(np.ones((1, 5)), 3)


@pytest.mark.parametrize("method", ["exact", "approximate"])
def test_index_and_graph_are_cached_on_disk_per_key(tmp_path, method):
    features, _, _ = clusters(2000, k=20, spread=1.0, seed=4)
    first = neighbours.knn_graph(features, k=8, method=method, key="emb1", cache_root=tmp_path)
    folder = tmp_path / "neighbours" / f"emb1-{method}"
    assert (folder / "graph-k8.npz").exists() and (folder / "graph-k8.npz.json").exists()
    assert (folder / "index.faiss").exists() == (method == "approximate")
    calls = []
    again = neighbours.knn_graph(features, k=8, method=method, key="emb1", cache_root=tmp_path,
                                 progress=lambda *a: calls.append(a))
    assert calls == []  # loaded, not searched again
    np.testing.assert_array_equal(first.indices, again.indices)
    # other features under the same key (another N) are never served the stale graph
    other = neighbours.knn_graph(features[:1500], k=8, method=method, key="emb1", cache_root=tmp_path)
    assert len(other) == 1500 and other.indices.max() < 1500


def test_knn_agreement_flags_a_flipped_label_inside_a_tight_cluster():
    features, labels, _ = clusters(600, seed=5)
    noisy = labels.copy()
    noisy[7] = (labels[7] + 1) % 6
    graph = neighbours.knn_graph(features, k=10)
    agreement = neighbours.knn_agreement(graph, noisy)
    assert agreement[7] == pytest.approx(0.0)
    assert np.delete(agreement, 7).min() >= 0.85  # its neighbours lost at most one vote of 10
    fit = fit_scores(features, noisy, num_classes=6, config=ScoringConfig(zeroshot=False))
    selection = select(fit, SelectionConfig(use_knn_agreement=True))
    assert selection.flagged_by["knn_agreement"][7] and not selection.clean_mask[7]
    assert selection.flagged_by["knn_agreement"].sum() == 1


def test_trusted_vote_discounts_the_neighbours_the_evidence_distrusts():
    """Pairwise noise (40 % of class 0 labelled 1): the plain vote of a flipped sample's cluster is
    only 60 / 40; weighting each neighbour by the trust in its own label separates them."""
    features, labels, _ = clusters(600, k=6, seed=21)
    rng = np.random.default_rng(3)
    noisy = labels.copy()
    flipped = rng.choice(np.flatnonzero(labels == 0), size=40, replace=False)
    noisy[flipped] = 1
    evidence = np.where(noisy == labels, 0.8, 0.3)  # what the per-sample scores believe
    graph = neighbours.knn_graph(features, k=10)
    plain = neighbours.knn_agreement(graph, noisy)
    trusted = neighbours.trusted_knn_agreement(graph, noisy, evidence)
    from sklearn.metrics import roc_auc_score

    cluster = labels == 0  # its flipped members against its correctly labelled ones
    wrong = (noisy != labels)[cluster]
    assert roc_auc_score(wrong, -plain[cluster]) < 0.7  # the plain vote barely separates them
    assert roc_auc_score(wrong, -trusted[cluster]) > 0.98
    assert trusted[flipped].mean() < plain[flipped].mean()
    assert ((trusted >= 0) & (trusted <= 1)).all()
    # the fit's kNN agreement is this vote, started from the paper's scores of each sample
    fit = fit_scores(features, noisy, num_classes=6, config=ScoringConfig(zeroshot=False))
    paper = np.mean([fit.lr_clean_prob, fit.lr_consistency], axis=0)
    np.testing.assert_allclose(fit.knn_agreement,
                               neighbours.trusted_knn_agreement(fit.knn, noisy, paper))
    with pytest.raises(DataError, match="in \\[0, 1\\]"):
        neighbours.trusted_knn_agreement(graph, noisy, evidence * 2)


def test_lemon_scores_the_flipped_label_lowest_in_its_given_class():
    features, labels, centres = clusters(600, seed=6)
    noisy = labels.copy()
    noisy[10] = (labels[10] + 2) % 6
    text_labels = np.repeat(np.arange(6), 2)
    text = unit(centres[text_labels] + 0.05 * np.random.default_rng(0).standard_normal((12, 32)))
    distance = neighbours.lemon_distance(features, neighbours.knn_graph(features, k=10), noisy,
                                         neighbours.class_text_centroids(text, text_labels, num_classes=6))
    same_class = np.flatnonzero(noisy == noisy[10])
    assert distance[10] == distance[same_class].max()
    fit = fit_scores(features, noisy, num_classes=6, text_features=text, text_labels=text_labels)
    assert fit.lemon_score[10] == pytest.approx(0.0)
    assert fit.lemon_clean_prob[10] < 0.5
    assert fit.lemon_clean_prob[10] == fit.lemon_clean_prob[same_class].min()
    assert "lemon" in available_scores(fit)


def test_a_duplicate_under_another_label_is_a_conflicting_group():
    features, labels, _ = clusters(300, seed=7)
    features = np.vstack([features, features[3:4], features[40:41]])  # copies of 3 and 40
    labels = np.append(labels, [(labels[3] + 1) % 6, labels[40]])
    graph = neighbours.knn_graph(features, k=5)
    found = neighbours.find_duplicates(graph, labels, threshold=0.999)
    assert found.n_groups == 2
    assert found.group[3] == found.group[300] == 0 and found.group[40] == found.group[301] == 1
    assert (found.group >= 0).sum() == 4
    assert found.conflicting[[3, 300]].all() and not found.conflicting[[40, 301]].any()
    split = np.array(["train"] * 301 + ["test"])
    crossing = neighbours.find_duplicates(graph, labels, threshold=0.999, split=split)
    assert crossing.cross_split[[40, 301]].all() and not crossing.cross_split[[3, 300]].any()
    with pytest.raises(ConfigError, match="must lie in"):
        neighbours.find_duplicates(graph, labels, threshold=1.5)


def test_an_outlier_from_another_distribution_scores_highest():
    features, labels, _ = clusters(400, seed=8)
    stranger = unit(np.random.default_rng(9).standard_normal((1, 32)))
    features = np.vstack([features, stranger])
    labels = np.append(labels, 0)
    score, z = neighbours.outlier_scores(neighbours.knn_graph(features, k=10))
    assert np.argmax(score) == 400 and z[400] > 3.5 and (np.delete(z, 400) < 3.5).mean() > 0.99
    fit = fit_scores(features, labels, num_classes=6, config=ScoringConfig(zeroshot=False))
    table = score_table(fit, select(fit))
    assert table.loc[400, "is_outlier"] and table["outlier_score"].idxmax() == 400


def test_zero_shot_evidence_flags_an_image_no_class_describes():
    features, labels, centres = clusters(400, seed=10)
    text_labels = np.arange(6)
    graph = neighbours.knn_graph(features, k=10)
    text_max = neighbours.max_text_similarity(features, centres)
    text_max[5] = -0.5  # as if no class text described image 5
    _, z = neighbours.outlier_scores(graph, text_max)
    assert z[5] > 3.5 and np.argmax(z) == 5
    assert neighbours.class_text_centroids(centres, text_labels, num_classes=6).shape == (6, 32)


def test_similarity_search_finds_the_cluster_of_a_query():
    features, labels, centres = clusters(600, seed=11)
    index = neighbours.neighbour_index(features)
    rows, sims = neighbours.rank_by_query(index, centres[2] * 3.0, k=50)  # any length is normalised
    assert (labels[rows] == 2).all() and (np.diff(sims) <= 1e-7).all()
    rows, _ = neighbours.rank_by_query(index, features[17], k=5)  # "more like this"
    assert rows[0] == 17 and (labels[rows] == labels[17]).all()
    with pytest.raises(DataError, match="zero or not finite"):
        neighbours.rank_by_query(index, np.zeros(32))


def test_default_selection_is_the_papers_rule_exactly():
    features, labels, centres = clusters(600, spread=1.5, seed=12)
    noisy = labels.copy()
    flip = np.random.default_rng(1).random(600) < 0.3
    noisy[flip] = np.random.default_rng(2).integers(0, 6, flip.sum())
    text_labels = np.arange(6)
    kwargs = dict(num_classes=6, text_features=centres, text_labels=text_labels)
    with_nb = fit_scores(features, noisy, **kwargs)
    without = fit_scores(features, noisy, config=ScoringConfig(neighbours=0), **kwargs)
    assert with_nb.has_neighbours and not without.has_neighbours
    for config in (SelectionConfig(), SelectionConfig.from_preset("cifar10-sym"),
                   SelectionConfig.from_preset("webvision")):
        a, b = select(with_nb, config), select(without, config)
        assert a.enabled == b.enabled == ("zs_loss", "zs_consistency", "lr_loss", "lr_consistency")
        np.testing.assert_array_equal(a.clean_mask, b.clean_mask)
        np.testing.assert_array_equal(a.label_score, b.label_score)
    defaults = SelectionConfig()
    assert not defaults.use_knn_agreement and not defaults.use_lemon and defaults.combine == "all"
    table = score_table(without, select(without))
    assert table["knn_agreement"].isna().all() and (table["duplicate_group"] == -1).all()
    assert not table["is_outlier"].any() and table["outlier_score"].isna().all()


def test_paper_presets_switch_the_neighbours_off_and_the_new_preset_on():
    on = SelectionConfig.from_preset("paper + neighbours")
    assert on.use_knn_agreement and on.use_lemon and on.combine == "majority"
    enabled = SelectionConfig(use_knn_agreement=True, use_lemon=True, combine="majority")
    for name, values in PRESETS.items():
        if name != "paper + neighbours":
            config = dataclasses.replace(enabled, **values)
            assert not config.use_knn_agreement and not config.use_lemon and config.combine == "all"


def test_majority_keeps_a_sample_that_fails_one_score_of_three():
    features, labels, _ = clusters(300, seed=13)
    noisy = labels.copy()
    noisy[0] = (labels[0] + 1) % 6
    fit = fit_scores(features, noisy, num_classes=6, config=ScoringConfig(zeroshot=False))
    config = SelectionConfig(use_knn_agreement=True)
    strict, vote = select(fit, config), select(fit, dataclasses.replace(config, combine="majority"))
    failed = sum(strict.flagged_by[name].astype(int) for name in strict.enabled)
    np.testing.assert_array_equal(strict.clean_mask & ~strict.refilled, failed == 0)
    np.testing.assert_array_equal(vote.clean_mask & ~vote.refilled, 2 * failed <= 3)
    assert (vote.clean_mask >= strict.clean_mask).all()
    with pytest.raises(ConfigError, match="valid rules: all, majority"):
        SelectionConfig(combine="any")


def test_the_neighbour_scores_count_as_one_in_the_label_score():
    features, labels, centres = clusters(300, spread=1.5, seed=15)
    noisy = labels.copy()
    noisy[:30] = (labels[:30] + 1) % 6
    fit = fit_scores(features, noisy, num_classes=6, text_features=centres, text_labels=np.arange(6))
    sel = select(fit, SelectionConfig.from_preset("paper + neighbours"))
    assert sel.enabled[-2:] == ("knn_agreement", "lemon")
    paper = [fit.zs_clean_prob, fit.zs_consistency, fit.lr_clean_prob, fit.lr_consistency]
    neighbour = 0.5 * (fit.knn_agreement + fit.lemon_clean_prob)
    np.testing.assert_allclose(sel.label_score, (sum(paper) + neighbour) / 5)
    only_knn = select(fit, dataclasses.replace(sel.config, use_lemon=False))
    np.testing.assert_allclose(only_knn.label_score, (sum(paper) + fit.knn_agreement) / 5)


def test_fit_round_trip_keeps_the_neighbour_evidence(tmp_path):
    features, labels, centres = clusters(200, seed=14)
    fit = fit_scores(features, labels, num_classes=6, text_features=centres, text_labels=np.arange(6))
    loaded = load_fit(save_fit(fit, tmp_path / "fit.npz"))
    for name in ("knn_indices", "knn_similarities", "knn_agreement", "lemon_score",
                 "lemon_clean_prob", "outlier_score", "outlier_z"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(fit, name))
    np.testing.assert_array_equal(loaded.lemon_mixtures.means, fit.lemon_mixtures.means)


def test_tiny_inputs_and_bad_settings():
    features, labels, _ = clusters(3, k=3)
    fit = fit_scores(features, labels, num_classes=3, config=ScoringConfig(zeroshot=False))
    assert fit.knn_indices.shape == (3, 2)  # k = min(10, N - 1)
    single = fit_scores(features[:1], labels[:1], num_classes=3, config=ScoringConfig(zeroshot=False))
    assert single.knn_agreement.tolist() == [1.0]
    with pytest.raises(ConfigError, match="whole number >= 0"):
        ScoringConfig(neighbours=-1)
    with pytest.raises(ConfigError, match="theta_knn"):
        SelectionConfig(theta_knn=1.5)


def test_exported_tables_read_back_the_neighbour_columns(tmp_path):
    from clipcleaner_core.export import export, read_table

    features, labels, _ = clusters(120, seed=15)
    features = np.vstack([features, features[:1]])
    labels = np.append(labels, (labels[0] + 1) % 6)
    fit = fit_scores(features, labels, num_classes=6, config=ScoringConfig(zeroshot=False))
    table = score_table(fit, select(fit))
    assert table.loc[0, "is_conflicting_duplicate"] and table.loc[120, "duplicate_group"] == 0
    for fmt in ("csv", "parquet", "json"):
        back = read_table(export(table, fmt, tmp_path / f"scores.{fmt}"))
        for column in ("knn_agreement", "lemon_score", "outlier_score", "duplicate_group",
                       "is_conflicting_duplicate", "is_outlier"):
            assert back[column].dtype == table[column].dtype, (fmt, column)
            np.testing.assert_array_equal(back[column].to_numpy(), table[column].to_numpy())


def test_the_api_and_the_command_line_switch_the_neighbour_scores_on(tmp_path):
    from clipcleaner_core import find_label_issues
    from clipcleaner_core.cli import main
    from clipcleaner_core.export import read_table

    features, labels, _ = clusters(300, seed=16)
    noisy = labels.copy()
    noisy[:12] = (labels[:12] + 1) % 6
    paper = find_label_issues(features, noisy)
    assert paper["knn_agreement"].isna().all()  # the paper's rule unless asked
    table = find_label_issues(features, noisy, scores=("paper", "knn_agreement"), neighbours=7,
                              theta_knn=0.3, combine="majority")
    assert table["knn_agreement"].notna().all()
    np.testing.assert_allclose(table["label_score"], table[["lr_clean_prob", "lr_consistency",
                                                            "knn_agreement"]].mean(axis=1))
    assert table.loc[:11, "is_label_issue"].all()
    with pytest.raises(ConfigError, match="need the neighbour evidence"):
        find_label_issues(features, noisy, scores=("knn_agreement",), neighbours=0)
    with pytest.raises(ConfigError, match="valid scores: paper"):
        find_label_issues(features, noisy, scores=("knn",))
    np.save(tmp_path / "x.npy", features)
    np.save(tmp_path / "y.npy", noisy)
    out = tmp_path / "scores.csv"
    assert main(["select", "--image-features", str(tmp_path / "x.npy"), "--labels",
                 str(tmp_path / "y.npy"), "--scores", "paper,knn_agreement", "--neighbours", "7",
                 "--theta-knn", "0.3", "--combine", "majority", "--out", str(out)]) == 0
    from_cli = read_table(out)
    np.testing.assert_allclose(from_cli["knn_agreement"], table["knn_agreement"])
    np.testing.assert_array_equal(from_cli["is_clean"], table["is_clean"])
    assert main(["select", "--image-features", str(tmp_path / "x.npy"), "--labels",
                 str(tmp_path / "y.npy"), "--theta-knn", "1.5", "--out", str(out)]) == 2


def test_run_takes_the_neighbour_flags(tmp_path):
    from clipcleaner_core.atomic import read_sidecar
    from clipcleaner_core.cli import main
    from clipcleaner_core.export import read_table

    out = tmp_path / "scores.csv"
    assert main(["run", "--data", "demo", "--model", "pixels", "--scores", "paper,knn_agreement",
                 "--theta-knn", "0.3", "--combine", "majority", "--out", str(out)]) == 0
    table = read_table(out)
    assert table["knn_agreement"].notna().all() and table["lemon_score"].isna().all()
    selection = read_sidecar(out)["selection"]
    assert selection["use_knn_agreement"] and selection["combine"] == "majority"
    assert selection["theta_knn"] == 0.3 and not selection["use_lemon"]


def test_a_sample_on_both_sides_of_a_split_is_flagged_with_its_twin(tmp_path):
    from clipcleaner_core import find_label_issues
    from clipcleaner_core.export import export, read_table

    train, labels, _ = clusters(300, seed=17)
    test, _, _ = clusters(80, seed=18)
    rng = np.random.default_rng(19)
    twin = unit(train[42:43] + 1e-4 * rng.standard_normal((1, 32)))  # a re-encoded copy of row 42
    test = np.vstack([test[:30], twin, test[30:]])  # row 30 of the test split
    matches = neighbours.match_across_splits(train, test, other_index=np.arange(1000, 1081))
    assert matches.duplicates(0.98).tolist() == [i == 42 for i in range(300)]
    assert matches.index[42] == 1030 and matches.similarity[42] > 0.999
    table = find_label_issues(train, labels, other_split_features=test)
    assert table["duplicate_across_splits"].sum() == 1 and table.loc[42, "duplicate_across_splits"]
    assert table.loc[42, "cross_split_match"] == 30
    assert (table["cross_split_match"].drop(42) == -1).all()
    plain = find_label_issues(train, labels)  # unchecked: False / -1
    assert not plain["duplicate_across_splits"].any() and (plain["cross_split_match"] == -1).all()
    for fmt in ("csv", "parquet"):
        back = read_table(export(table, fmt, tmp_path / f"split.{fmt}"))
        assert back["duplicate_across_splits"].dtype == bool
        np.testing.assert_array_equal(back["cross_split_match"], table["cross_split_match"])
    with pytest.raises(DataError, match="same model"):
        neighbours.match_across_splits(train, test[:, :16])


def test_run_checks_the_test_split_of_a_manifest_for_duplicates(tmp_path):
    from PIL import Image

    from clipcleaner_core.cli import main
    from clipcleaner_core.export import read_table

    rng = np.random.default_rng(20)
    rows = []
    for i in range(60):
        split = "test" if i >= 48 else "train"
        pixels = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
        if i == 50:  # the test split holds a copy of training image 7
            pixels = np.asarray(Image.open(tmp_path / "img7.png"))
        Image.fromarray(pixels).save(tmp_path / f"img{i}.png")
        rows.append(f"img{i}.png,{i % 3},{split}")
    (tmp_path / "data.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    out = tmp_path / "scores.csv"
    assert main(["run", "--data", str(tmp_path / "data.csv"), "--model", "pixels",
                 "--check-splits", "--out", str(out)]) == 0
    table = read_table(out)
    assert len(table) == 48 and table["duplicate_across_splits"].tolist() == [i == 7 for i in range(48)]
    assert table.loc[7, "cross_split_match"] == 2  # the test split's third image (img50)


def test_check_splits_refuses_a_dataset_without_another_split(tmp_path, capsys):
    """A folder without train/ and test/ loads the same images for 'test': each image would be
    its own duplicate across splits, so the check says why it cannot run instead."""
    from PIL import Image

    from clipcleaner_core.cli import main

    rng = np.random.default_rng(21)
    for i in range(12):
        (tmp_path / "data" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(
            tmp_path / "data" / f"c{i % 2}" / f"{i}.png")
    out = tmp_path / "scores.csv"
    assert main(["run", "--data", str(tmp_path / "data"), "--model", "pixels", "--check-splits",
                 "--out", str(out)]) == 2
    assert "has no separate test split" in capsys.readouterr().err and not out.exists()
