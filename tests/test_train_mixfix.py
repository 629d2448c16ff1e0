"""The MixFix recipe's pieces: relabel-and-grow, balanced sampling, mixup, soft CE, step decay."""
import numpy as np
import pytest
import torch

from clipcleaner_core.train.mixfix import (
    balanced_batches, mixup, relabel_and_grow, soft_cross_entropy, step_lr,
)


def _probs(rows):
    return np.asarray(rows, dtype=np.float64)


def test_relabel_and_grow_follows_design_section_3():
    given = np.array([0, 1, 2, 0, 1, 2])
    s0 = np.array([True, True, False, False, False, False])
    s0_labels = np.array([0, 2, -1, -1, -1, -1])  # sample 1 was corrected by a reviewer to class 2
    probs = _probs([
        [0.10, 0.90, 0.00],  # S0: stays with its S0 label even though the model disagrees
        [0.98, 0.01, 0.01],  # S0: stays with label 2
        [0.05, 0.05, 0.90],  # agrees with given 2 at 0.90 >= theta_r: joins, label 2
        [0.00, 0.97, 0.03],  # disagrees (given 0) at 0.97 >= theta_r2: relabelled to 1, joins
        [0.85, 0.10, 0.05],  # disagrees at 0.85 < theta_r2: stays out
        [0.30, 0.00, 0.70],  # agrees at 0.70 < theta_r: stays out
    ])
    grown = relabel_and_grow(probs, given, s0, s0_labels, theta_r=0.8, theta_r2=0.95)
    assert grown.in_set.tolist() == [True, True, True, True, False, False]
    assert grown.labels[:4].tolist() == [0, 2, 2, 1]
    assert grown.labels[4:].tolist() == [1, 2]  # left-out samples keep their given labels
    assert grown.relabelled.tolist() == [False, False, False, True, False, False]
    assert grown.joined.tolist() == [False, False, True, False, False, False]
    assert grown.relabel_count == 1


def test_relabel_and_grow_is_recomputed_from_s0_each_epoch():
    given = np.array([0, 1])
    s0 = np.array([True, False])
    confident = relabel_and_grow(_probs([[1, 0], [0.99, 0.01]]), given, s0, given,
                                 theta_r=0.8, theta_r2=0.95)
    assert confident.in_set.tolist() == [True, True] and confident.labels[1] == 0
    unsure = relabel_and_grow(_probs([[1, 0], [0.6, 0.4]]), given, s0, given,
                              theta_r=0.8, theta_r2=0.95)
    assert unsure.in_set.tolist() == [True, False] and unsure.labels[1] == 1


def test_balanced_batches_draw_every_class_as_often_as_the_largest():
    labels = np.array([0] * 90 + [1] * 10 + [2] * 5)
    in_set = np.ones(len(labels), dtype=bool)
    in_set[-5:] = False  # class 2 is outside the current set: never drawn
    batches = balanced_batches(labels, in_set, num_batches=18, batch_size=10, seed=0)
    drawn = np.concatenate(batches)
    assert len(batches) == 18 and all(len(b) == 10 for b in batches)
    counts = np.bincount(labels[drawn], minlength=3)
    assert counts[2] == 0 and counts[0] == counts[1] == 90  # 180 draws = 2 classes x 90
    assert set(drawn[labels[drawn] == 1]) == set(range(90, 100))


def test_balanced_batches_shard_one_global_order_across_ranks():
    labels = np.repeat(np.arange(4), 25)
    in_set = np.ones(100, dtype=bool)
    whole = balanced_batches(labels, in_set, num_batches=5, batch_size=8, seed=3)
    ranks = [balanced_batches(labels, in_set, num_batches=5, batch_size=8, seed=3, rank=r,
                              world_size=2) for r in (0, 1)]
    for b, (r0, r1) in enumerate(zip(*ranks)):
        assert sorted(np.concatenate([r0, r1])) == sorted(whole[b])
        assert len(r0) == len(r1) == 4


def test_balanced_batches_refuse_an_empty_set():
    with pytest.raises(ValueError, match="empty"):
        balanced_batches(np.zeros(3, dtype=int), np.zeros(3, dtype=bool), num_batches=1,
                         batch_size=2, seed=0)


def test_mixup_keeps_lambda_at_least_half_and_mixes_targets_like_inputs():
    x = torch.eye(6)
    y = torch.eye(6)
    mixed_x, mixed_y = mixup(x, y, beta=1.0, generator=np.random.default_rng(0))
    assert torch.allclose(mixed_x, mixed_y)  # inputs and targets mixed with the same pairs
    assert torch.all(mixed_y.diagonal() >= 0.5 - 1e-6)
    assert torch.allclose(mixed_y.sum(1), torch.ones(6))
    same_x, _ = mixup(x, y, beta=0.0, generator=np.random.default_rng(0))
    assert torch.equal(same_x, x)


def test_soft_cross_entropy_matches_torch_on_one_hot_targets():
    logits = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 2, 1, 1, 0])
    soft = soft_cross_entropy(logits, torch.nn.functional.one_hot(labels, 3).float())
    assert torch.allclose(soft, torch.nn.functional.cross_entropy(logits, labels))


def test_step_lr_decays_tenfold_at_each_milestone():
    assert step_lr(0.02, 0, (200, 250)) == pytest.approx(0.02)
    assert step_lr(0.02, 200, (200, 250)) == pytest.approx(0.002)
    assert step_lr(0.02, 299, (200, 250)) == pytest.approx(0.0002)
