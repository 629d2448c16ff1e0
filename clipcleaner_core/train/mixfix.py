"""The pieces of the paper's training recipe (DESIGN §3), as small functions.

- :func:`balanced_batches`: class-balanced sampling over the current set, sharded across ranks;
- :func:`mixup`: mixup within a batch with lambda = max(lambda, 1 - lambda);
- :func:`soft_cross_entropy`: cross-entropy against soft (mixed one-hot) targets;
- :func:`relabel_and_grow`: the per-epoch MixFix step;
- :func:`step_lr`: the step-decay schedule.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from clipcleaner_core.errors import DataError


def step_lr(base_lr: float, epoch: int, milestones: tuple[int, ...], gamma: float = 0.1) -> float:
    """Learning rate for 0-based ``epoch``: ``base_lr`` x gamma per milestone already reached."""
    return base_lr * gamma ** sum(epoch >= m for m in milestones)


def balanced_batches(
    labels: np.ndarray,
    in_set: np.ndarray,
    *,
    num_batches: int,
    batch_size: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
) -> list[np.ndarray]:
    """Index batches drawn class-balanced from the samples where ``in_set`` is True.

    Every class present in the set is drawn as often as the largest one: each class's indices are
    shuffled and tiled up to the largest class count, the pooled list is shuffled and cycled until it
    fills ``num_batches`` x ``batch_size`` draws. Every rank computes the same global order from
    ``seed`` and keeps every ``world_size``-th draw from ``rank`` (a DistributedSampler-style shard),
    so one epoch covers ``num_batches`` global batches of ``batch_size`` samples in all.

    Returns ``num_batches`` arrays of training-row indices (each ``batch_size // world_size`` long,
    at least 1).
    """
    rng = np.random.default_rng(seed)
    members = np.flatnonzero(in_set)
    if len(members) == 0:
        raise DataError("the training set is empty: no sample is selected as clean; lower the "
                        "selection thresholds or train with --all-labels")
    classes = [members[labels[members] == c] for c in np.unique(labels[members])]
    largest = max(len(idx) for idx in classes)
    need = num_batches * batch_size
    draws: list[np.ndarray] = []
    total = 0
    while total < need:
        pool = np.concatenate([_tile(rng.permutation(idx), largest, rng) for idx in classes])
        rng.shuffle(pool)
        draws.append(pool)
        total += len(pool)
    order = np.concatenate(draws)[:need].reshape(num_batches, batch_size)
    per_rank = max(1, batch_size // world_size)
    return [row[rank::world_size][:per_rank] for row in order]


def _tile(idx: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """``idx`` repeated to ``length`` entries; the last partial copy is a random subset."""
    full, rest = divmod(length, len(idx))
    return np.concatenate([idx] * full + [rng.choice(idx, size=rest, replace=False)])


def mixup(
    inputs: torch.Tensor, targets: torch.Tensor, *, beta: float, generator: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix a batch with a shuffled copy of itself.

    ``targets`` are (B, K) soft/one-hot rows. lambda ~ Beta(beta, beta), lambda = max(lambda,
    1 - lambda), so each mixed sample stays closer to its own input and target. ``beta == 0``
    returns the batch unchanged.
    """
    if beta <= 0 or len(inputs) < 2:
        return inputs, targets
    lam = float(generator.beta(beta, beta))
    lam = max(lam, 1.0 - lam)
    perm = torch.from_numpy(generator.permutation(len(inputs))).to(inputs.device)
    return lam * inputs + (1 - lam) * inputs[perm], lam * targets + (1 - lam) * targets[perm]


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum_k targets[k] * log_softmax(logits)[k]."""
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


@dataclass(frozen=True)
class GrowResult:
    """Outcome of one relabel-and-grow step (arrays are over all training rows)."""

    in_set: np.ndarray  # (n,) bool: the new training set
    labels: np.ndarray  # (n,) int64: labels to train on (S0 labels, given or relabelled)
    joined: np.ndarray  # (n,) bool: outside S0, joined with the given label
    relabelled: np.ndarray  # (n,) bool: outside S0, joined with the predicted label

    @property
    def relabel_count(self) -> int:
        return int(self.relabelled.sum())


def relabel_and_grow(
    probs: np.ndarray,
    given_labels: np.ndarray,
    s0_mask: np.ndarray,
    s0_labels: np.ndarray,
    *,
    theta_r: float,
    theta_r2: float,
) -> GrowResult:
    """The MixFix step of DESIGN §3, recomputed from S0 after every epoch.

    Parameters
    ----------
    probs
        (n, K) predicted class probabilities for every training row (no augmentation).
    given_labels
        (n,) the labels the samples came with.
    s0_mask
        (n,) bool, the clean start set S0; its rows always stay, with ``s0_labels``.
    s0_labels
        (n,) labels of S0 rows (given, or a reviewer's correction); other rows ignored.
    theta_r
        a prediction that agrees with the given label joins at confidence >= theta_r.
    theta_r2
        a prediction that disagrees joins, relabelled to the prediction, at
        confidence >= theta_r2.

    Returns
    -------
    GrowResult: new set = S0 + joined + relabelled, with the labels to train on next epoch.
    """
    probs = np.asarray(probs)
    prediction = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    outside = ~np.asarray(s0_mask, dtype=bool)
    agrees = prediction == given_labels
    joined = outside & agrees & (confidence >= theta_r)
    relabelled = outside & ~agrees & (confidence >= theta_r2)
    labels = np.where(outside, given_labels, s0_labels).astype(np.int64)
    labels[relabelled] = prediction[relabelled]
    return GrowResult(in_set=~outside | joined | relabelled, labels=labels, joined=joined,
                      relabelled=relabelled)
