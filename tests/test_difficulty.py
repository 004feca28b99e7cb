"""Difficulty scores: the online recorder on hand-made logits, the MLP proxy on planted noise."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs
from sklearn.metrics import roc_auc_score

from fiftyone_elfs.difficulty import (
    HARD_IS_LOW,
    DifficultyScores,
    TrainingDynamicsRecorder,
    train_mlp_proxy,
)
from fiftyone_elfs.difficulty.training_dynamics import (
    DEFAULT_PROXY_EPOCHS,
    MIN_SCALED_PROXY_EPOCHS,
    PROXY_WORK_BUDGET,
    scaled_proxy_epochs,
)
from fiftyone_elfs.selection import label_free_beta


def _logits(probs: list[list[float]]) -> np.ndarray:
    """Logits whose softmax is exactly ``probs`` (log-probabilities)."""
    return np.log(np.array(probs, dtype=np.float64))


def _blobs(flip_rate: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """5 overlapping Gaussian blobs (1000 x 32); ``flip_rate`` of labels moved to another class."""
    X, y = make_blobs(n_samples=1000, centers=5, n_features=32, cluster_std=8.0, random_state=seed)
    rng = np.random.default_rng(seed)
    flipped = np.zeros(len(y), dtype=bool)
    flipped[rng.choice(len(y), size=int(round(flip_rate * len(y))), replace=False)] = True
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, 5, flipped.sum())) % 5
    return X.astype(np.float32), noisy, flipped


# --------------------------------------------------------------------------- recorder


def test_aum_and_el2n_match_hand_computed_values():
    rec = TrainingDynamicsRecorder(n_samples=3, n_classes=3, el2n_epochs=1)
    labels = np.array([0, 1, 2])
    # Epoch 1, two minibatches. Margins p(y) - max other: 0.7-0.2, 0.6-0.3, 0.25-0.5.
    rec.update([0, 1], _logits([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]]), labels[[0, 1]])
    rec.update([2], _logits([[0.5, 0.25, 0.25]]), labels[[2]])
    rec.end_epoch()
    # Epoch 2, shuffled order, torch inputs. Margins: 0.2-0.5, 0.8-0.1, 0.2-0.4.
    rec.update(
        torch.tensor([2, 0]),
        torch.tensor(_logits([[0.4, 0.4, 0.2], [0.2, 0.5, 0.3]])),
        torch.tensor([2, 0]),
    )
    rec.update(np.array([1]), _logits([[0.1, 0.8, 0.1]]), np.array([1]))
    rec.end_epoch()

    expected_aum = [
        (0.7 - 0.2) + (0.2 - 0.5),
        (0.6 - 0.3) + (0.8 - 0.1),
        (0.25 - 0.5) + (0.2 - 0.4),
    ]
    np.testing.assert_allclose(rec.aum, expected_aum, atol=1e-6)
    assert rec.aum.dtype == np.float32
    # EL2N counts epoch 1 only (el2n_epochs=1): ||p - onehot(y)||_2 of the first presentation.
    expected_el2n = [
        math.sqrt(0.3**2 + 0.2**2 + 0.1**2),
        math.sqrt(0.1**2 + 0.4**2 + 0.3**2),
        math.sqrt(0.5**2 + 0.25**2 + 0.75**2),
    ]
    np.testing.assert_allclose(rec.el2n, expected_el2n, atol=1e-6)
    # Sample 0 went correct -> incorrect; sample 1 stayed correct; sample 2 was never correct.
    np.testing.assert_array_equal(rec.forgetting, [1, 0, 0])
    np.testing.assert_array_equal(rec.n_correct, [1, 2, 0])
    np.testing.assert_array_equal(rec.epochs_seen, [2, 2, 2])
    assert rec.n_epochs == 2

    scores = rec.scores()
    assert isinstance(scores, DifficultyScores) and scores.n_epochs == 2 and len(scores) == 3
    np.testing.assert_allclose(scores.aum, expected_aum, atol=1e-6)


def test_el2n_sums_only_the_first_el2n_epochs():
    rec = TrainingDynamicsRecorder(n_samples=1, n_classes=2, el2n_epochs=2)
    per_epoch = []
    for p in (0.9, 0.6, 0.3, 0.1):  # p(y) in four epochs; ||p - onehot|| = sqrt(2) * (1 - p)
        rec.update([0], _logits([[p, 1 - p]]), [0])
        rec.end_epoch()
        per_epoch.append(math.sqrt(2) * (1 - p))
    assert rec.el2n[0] == pytest.approx(per_epoch[0] + per_epoch[1], abs=1e-6)
    assert rec.aum[0] == pytest.approx(sum(2 * p - 1 for p in (0.9, 0.6, 0.3, 0.1)), abs=1e-6)


def test_forgetting_counts_exactly_the_correct_to_incorrect_transitions():
    # Per epoch: 1 = correct, 0 = incorrect, None = not seen in that epoch.
    sequences = [
        [0, 1, 1, 0, 1, 0, 0, 1],  # 1->0 twice
        [1, None, 0, None, 1, 1, None, 0],  # transitions between seen epochs: 1->0, 0->1, 1->0
        [0, 0, 0, 0, 0, 0, 0, 0],  # never learned: no event
        [1, 1, 1, 1, 1, 1, 1, 1],  # never forgotten
        [1, 0, 1, 0, 1, 0, 1, 0],  # 4 events
    ]
    rec = TrainingDynamicsRecorder(n_samples=len(sequences), n_classes=3)
    for epoch in range(8):
        idx = [i for i, seq in enumerate(sequences) if seq[epoch] is not None]
        labels = np.array([i % 3 for i in idx])
        logits = np.zeros((len(idx), 3))
        for row, i in enumerate(idx):
            winner = labels[row] if sequences[i][epoch] else (labels[row] + 1) % 3
            logits[row, winner] = 2.0
        rec.update(idx, logits, labels)
        rec.end_epoch()
    np.testing.assert_array_equal(rec.forgetting, [2, 2, 0, 0, 4])
    np.testing.assert_array_equal(rec.epochs_seen, [8, 5, 8, 8, 8])
    # The score ranks the never-learned sample as the most forgotten (Toneva et al.), one event
    # per presentation: with no event it had ranked among the easiest (selection audit).
    scores = rec.scores()
    np.testing.assert_array_equal(scores.forgetting, [2, 2, 8, 0, 4])
    assert np.argmax(scores.forgetting) == 2


def test_repeated_indices_in_a_batch_are_presentations_in_order():
    rec = TrainingDynamicsRecorder(n_samples=2, n_classes=2)
    # Sample 0 shown three times in one batch: correct, incorrect, correct -> one forgetting event.
    rec.update(
        [0, 0, 1, 0], _logits([[0.8, 0.2], [0.3, 0.7], [0.5, 0.5], [0.9, 0.1]]), [0, 0, 1, 0]
    )
    rec.end_epoch()
    assert rec.forgetting[0] == 1 and rec.presentations[0] == 3 and rec.epochs_seen[0] == 1
    assert rec.aum[0] == pytest.approx(0.6 - 0.4 + 0.8, abs=1e-6)


def test_recorder_rejects_bad_batches():
    rec = TrainingDynamicsRecorder(n_samples=4, n_classes=3)
    with pytest.raises(ValueError, match="shape"):
        rec.update([0, 1], np.zeros((2, 2)), [0, 1])
    with pytest.raises(ValueError, match="same length"):
        rec.update([0, 1], np.zeros((3, 3)), [0, 1, 2])
    with pytest.raises(ValueError, match="indices must lie"):
        rec.update([4], np.zeros((1, 3)), [0])
    with pytest.raises(ValueError, match="labels must lie"):
        rec.update([0], np.zeros((1, 3)), [3])
    with pytest.raises(ValueError, match="NaN"):
        rec.update([0], np.full((1, 3), np.nan), [0])
    with pytest.raises(ValueError, match="n_classes"):
        TrainingDynamicsRecorder(n_samples=4, n_classes=1)


def test_hard_is_low_directions():
    assert HARD_IS_LOW == {"aum": True, "forgetting": False, "el2n": False}


# --------------------------------------------------------------------------- MLP proxy


def test_aum_and_el2n_rank_planted_mislabels_as_hardest():
    X, y, flipped = _blobs(0.10)
    scores = train_mlp_proxy(X, y, seed=0)
    assert scores.n_epochs > 0 and scores.aum.shape == (len(y),)
    assert roc_auc_score(flipped, -scores.aum) > 0.9
    assert roc_auc_score(flipped, scores.el2n) > 0.9
    # Forgetting is a weak detector here (AUC about 0.6): many flipped points are never learned
    # at all, so they have no forgetting event; n_correct shows them instead.
    assert (
        np.mean(scores.n_correct[flipped] == 0)
        > 0.1
        > 0.01
        > np.mean(scores.n_correct[~flipped] == 0)
    )


def test_default_beta_rises_with_planted_noise():
    betas = []
    for rate in (0.0, 0.1, 0.3):
        X, y, _ = _blobs(rate, seed=1)
        aum = train_mlp_proxy(X, y, seed=0).aum
        beta, reason = label_free_beta(aum, budget_fraction=0.2, hard_share=0.0)
        assert isinstance(reason, str) and "AUM" in reason
        betas.append(beta)
    assert betas[0] < betas[1] < betas[2], betas
    assert betas[0] < 0.05 and abs(betas[1] - 0.1) < 0.05 and abs(betas[2] - 0.3) < 0.08


def test_proxy_is_deterministic_and_reports_progress():
    X, y, _ = _blobs(0.1, seed=2)
    calls = []
    a = train_mlp_proxy(X, y, epochs=5, seed=3, progress=lambda f, label: calls.append((f, label)))
    b = train_mlp_proxy(X, y, epochs=5, seed=3)
    c = train_mlp_proxy(X, y, epochs=5, seed=4)
    for name in ("aum", "forgetting", "el2n"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.aum, c.aum)
    assert [f for f, _ in calls] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert a.n_epochs == 5 and np.all(a.epochs_seen == 5)


def test_proxy_leaves_global_state_alone():
    X, y, _ = _blobs(0.0, seed=3)
    threads = torch.get_num_threads()
    rng_state = torch.get_rng_state()
    train_mlp_proxy(X, y, epochs=2, num_threads=1)
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.get_rng_state(), rng_state)


def test_proxy_handles_a_last_batch_of_one_and_inferred_classes():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(257, 8)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    scores = train_mlp_proxy(X, y, epochs=2, batch_size=256)
    assert np.all(scores.epochs_seen == 2) and np.isfinite(scores.aum).all()


@pytest.mark.parametrize(
    ("X", "labels", "kwargs", "match"),
    [
        (np.zeros(10), np.zeros(10, int), {}, "2-D"),
        (np.array([[0.0, np.nan]] * 4), np.array([0, 1, 0, 1]), {}, "NaN"),
        (np.ones((4, 2)), np.array([0, 1, 0]), {}, "one pseudo-label per row"),
        (np.ones((4, 2)), np.zeros(4, int), {}, "at least 2"),
        (np.ones((4, 2)), np.array([0, 1, 0, 2]), {"n_classes": 2}, "n_classes"),
        (np.ones((4, 2)), np.array([0, 1, 0, -1]), {}, "non-negative"),
        (np.ones((4, 2)), np.array([0.0, 1.5, 0, 1]), {}, "integer"),
        (np.ones((4, 2)), np.array([0, 1, 0, 1]), {"epochs": 0}, "epochs"),
        (np.ones((4, 2)), np.array([0, 1, 0, 1]), {"input_dropout": 1.0}, "input_dropout"),
    ],
)
def test_proxy_input_errors_name_the_problem(X, labels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        train_mlp_proxy(X, labels, **kwargs)


def test_proxy_standardises_without_copying_the_embeddings():
    from fiftyone_elfs.difficulty.training_dynamics import _Standardizer

    rng = np.random.default_rng(0)
    X = (rng.normal(size=(400_000, 64)) * rng.uniform(0.5, 3.0, 64) + 4.0).astype(np.float32)
    tracemalloc.start()
    std = _Standardizer(X)
    fit_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # Chunk temporaries only (16,384 rows): X is 102 MB, a float64 copy of it 205 MB.
    assert fit_peak < 30 * 2**20, fit_peak
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    np.testing.assert_array_equal(std.mean, Xn.mean(axis=0, dtype=np.float64).astype(np.float32))
    np.testing.assert_array_equal(std.scale, Xn.std(axis=0, dtype=np.float64).astype(np.float32))
    rows = np.array([5, 399_999, 17])
    np.testing.assert_array_equal(std.rows(X, rows), (Xn[rows] - std.mean) / std.scale)

    y = rng.integers(0, 10, len(X))
    tracemalloc.start()
    train_mlp_proxy(X, y, epochs=1, batch_size=8192, hidden_dim=16, device="cpu")
    train_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # Per-sample statistics (~14 MB) and minibatches; a standardised copy of X would be 102 MB.
    assert train_peak < X.nbytes / 2, train_peak


def test_scaled_proxy_epochs_keeps_small_runs_and_bounds_the_work_of_large_ones():
    assert scaled_proxy_epochs(50_000, 1280, 10) == DEFAULT_PROXY_EPOCHS  # CIFAR-10: unchanged
    sizes = [10_000, 200_000, 400_000, 1_280_000, 10_000_000]
    epochs = [scaled_proxy_epochs(n, 512, 1000) for n in sizes]
    assert epochs == sorted(epochs, reverse=True) and epochs[0] == DEFAULT_PROXY_EPOCHS
    assert epochs[-1] == MIN_SCALED_PROXY_EPOCHS
    for n, e in zip(sizes, epochs, strict=True):
        work = 3.0 * n * (512 * 512 + 512 * 1000) * e
        assert work <= PROXY_WORK_BUDGET or e == MIN_SCALED_PROXY_EPOCHS
        assert e == DEFAULT_PROXY_EPOCHS or 3.0 * n * (512 * 512 + 512 * 1000) * (e + 1) > (
            PROXY_WORK_BUDGET
        )
    with pytest.raises(ValueError, match="n_samples"):
        scaled_proxy_epochs(0, 512, 10)
