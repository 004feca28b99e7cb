"""The benchmark harness (benchmarks/) end to end on a few hundred real images, and protocol A.

The smoke run uses CIFAR-10 JPEGs from ../shared/data when present (20 train + 10 test per
class), else scikit-learn's digit scans written as 8x8 PNGs (the harness resizes them to 32x32
RGB for protocol B). Everything it writes goes to a temporary folder.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_CIFAR = os.path.join(REPO, "..", "shared", "data", "cifar10-jpg.tar.gz")
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

from elfs_bench.cli import main  # noqa: E402
from elfs_bench.protocols import ProbeConfig, feature_stats, protocol_a  # noqa: E402

SMOKE_METHODS = [
    "random",
    "kcenter",
    "zcore",
    "typiclust",
    "elfs_kmeans",
    "elfs_default",
    "supervised_ccs",
]


def _write_digit_tree(root: str, train_per_class: int, test_per_class: int) -> None:
    """Disjoint train/ and test/ class trees of scikit-learn's real 8x8 digit scans as PNGs."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    counts: dict[int, int] = {}
    for i, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        k = counts.get(int(label), 0)
        if k >= train_per_class + test_per_class:
            continue
        counts[int(label)] = k + 1
        split = "train" if k < train_per_class else "test"
        folder = os.path.join(root, split, str(label))
        os.makedirs(folder, exist_ok=True)
        pixels = (image * (255.0 / 16.0)).round().astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(os.path.join(folder, f"{i:04d}.png"))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One harness invocation: rate 70, seed 0, protocols A and B (30 steps), six methods."""
    root = str(tmp_path_factory.mktemp("bench"))
    data_dir = os.path.join(root, "data")
    os.makedirs(data_dir)
    if os.path.exists(SHARED_CIFAR):
        patterns = ["train/*/00[0-1][0-9].jpg", "test/*/000[0-9].jpg"]
        subprocess.run(
            ["tar", "-xzf", SHARED_CIFAR, "-C", data_dir, "--wildcards", *patterns], check=True
        )
    else:
        _write_digit_tree(data_dir, train_per_class=20, test_per_class=10)
    argv = [
        "--data-dir", data_dir,
        "--rates", "70",
        "--seeds", "0",
        "--methods", ",".join(SMOKE_METHODS),
        "--protocols", "A,B",
        "--steps", "30",
        "--zcore-draws", "2000",
        "--proxy-epochs", "20",
        "--run-name", "smoke",
        "--results-dir", os.path.join(root, "results"),
        "--cache-dir", os.path.join(root, "cache"),
    ]  # fmt: skip
    t0 = time.perf_counter()
    summary = main(argv)
    return {"argv": argv, "summary": summary, "seconds": time.perf_counter() - t0, "root": root}


@pytest.mark.slow
def test_benchmark_smoke_results_report_and_resume(smoke_run):
    summary = smoke_run["summary"]
    run_dir = summary["run_dir"]
    assert summary["computed"] == len(SMOKE_METHODS) * 2
    assert summary["errors"] == 0

    raw = sorted(glob.glob(os.path.join(run_dir, "raw", "*.json")))
    assert len(raw) == len(SMOKE_METHODS) * 2
    for method in SMOKE_METHODS:
        for protocol in ("A", "B"):
            path = os.path.join(run_dir, "raw", f"{method}__r70__s0__{protocol}.json")
            with open(path) as f:
                r = json.load(f)
            assert 0.0 <= r["accuracy"] <= 1.0, (method, protocol, r.get("error"))
            assert r["selected"] == r["budget"] == round(0.3 * r["pool_size"])
            assert r["pool_size"] == 180  # 200 train images minus the 10% validation split
            assert r["data"]["test_size"] == 100
            assert len(r["commit"]) == 40
            assert "--run-name smoke" in r["command"]
            assert r["machine"]["cpu_count"] >= 1 and r["machine"]["platform"]
            for package in ("torch", "numpy", "fiftyone", "sklearn"):
                assert r["versions"][package], package
            info = r["method_info"]
            assert info["select_seconds"] >= 0 and "from_scratch_peak_rss_delta_mb" in info
            assert r["uses_labels"] == (method == "supervised_ccs")
            if protocol == "B":
                assert r["protocol_info"]["steps"] == 30
                assert r["protocol_info"]["parameters"] == 145_242  # width 16
    with open(os.path.join(run_dir, "raw", "elfs_kmeans__r70__s0__A.json")) as f:
        elfs = json.load(f)["method_info"]
    assert 0.0 <= elfs["beta"] < 1.0 and "negative AUM" in elfs["beta_reason"]
    assert 0.1 <= elfs["cluster_accuracy"] <= 1.0  # 10 classes: chance is ~0.1 or more
    with open(os.path.join(run_dir, "raw", "elfs_default__r70__s0__B.json")) as f:
        default = json.load(f)["method_info"]
    # The package default's rule is recorded with each result: typical exactly when trust is
    # weak.
    assert default["mode"] == ("typical" if default["trust_stability"] < 0.9 else "window")
    assert default["selection"] == ("typical" if default["mode"] == "typical" else "double-end")
    assert default["clustering"] == "temi" and "trust" in default["mode_reason"]
    with open(os.path.join(run_dir, "raw", "supervised_ccs__r70__s0__A.json")) as f:
        sup = json.load(f)["method_info"]
    assert "validation" in sup["beta_reason"] and sup["grid_val_accuracy"]

    for protocol in ("A", "B"):
        with open(os.path.join(run_dir, f"table_{protocol}.md")) as f:
            table = f.read()
        for method in SMOKE_METHODS:
            assert f"| {method}" in table, method
        assert "| supervised_ccs †" in table
        assert "Paired difference to random" in table
        assert f"| {default['mode']} |" in table  # the 'mode by rate' column
        with open(os.path.join(run_dir, f"plot_{protocol}.png"), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    # A second invocation recomputes nothing and leaves every result file untouched.
    stamps = {p: os.stat(p).st_mtime_ns for p in raw}
    again = main(smoke_run["argv"])
    assert again["computed"] == 0 and again["reused"] == len(raw)
    assert {p: os.stat(p).st_mtime_ns for p in raw} == stamps


@pytest.mark.slow
def test_benchmark_refuses_to_mix_settings(smoke_run):
    argv = list(smoke_run["argv"])
    argv[argv.index("--steps") + 1] = "31"
    with pytest.raises(SystemExit, match="other settings"):
        main(argv)


def test_protocol_a_full_pool_beats_tiny_random_coreset():
    """Protocol A must learn from its training set: all 1,200 digit scans vs 20 random ones."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float32)
    pool, test = np.arange(1200), np.arange(1200, X.shape[0])
    stats = feature_stats(X[pool])
    tiny = np.random.default_rng(0).choice(pool, size=20, replace=False)
    full = protocol_a(X[pool], y[pool], X[test], y[test], stats, ProbeConfig())
    small = protocol_a(X[tiny], y[tiny], X[test], y[test], stats, ProbeConfig())
    assert full.info["converged"]
    assert full.accuracy > 0.85
    assert full.accuracy > small.accuracy + 0.05


def test_label_quality_diagnostic_mixes_true_labels_into_matched_clusters():
    """The 'mix<pct>' pseudo-labels: the true share is honoured and k-means's clusters are
    renamed to the classes they match, so share 0 scores exactly the Hungarian accuracy."""
    from elfs_bench.methods import _mixed_pseudo_labels
    from sklearn.datasets import make_blobs

    from fiftyone_elfs.pseudo_labels import cluster_accuracy

    X, y = make_blobs(n_samples=600, centers=4, cluster_std=4.0, random_state=0)
    X = X.astype(np.float32)
    accuracy = {
        pct: float(np.mean(_mixed_pseudo_labels(X, y, 4, f"mix{pct}", seed=0) == y))
        for pct in (0, 50, 100)
    }
    matched = _mixed_pseudo_labels(X, y, 4, "mix0", seed=0)
    assert accuracy[0] == pytest.approx(cluster_accuracy(y, matched))
    assert accuracy[0] < 0.95  # overlapping blobs: k-means makes mistakes to replace
    assert accuracy[100] == 1.0
    expected_half = accuracy[0] + 0.5 * (1 - accuracy[0])
    assert abs(accuracy[50] - expected_half) < 0.06


def test_proportional_draw_keeps_the_data_class_shares():
    """The pool is drawn with the data's own class proportions unless --balanced is given."""
    from elfs_bench.data import balanced_subsample, proportional_subsample

    labels = np.repeat([0, 1, 2, 3], [700, 200, 90, 10])
    idx = proportional_subsample(labels, 300, seed=0)
    assert idx.size == 300 and np.unique(idx).size == 300
    np.testing.assert_array_equal(np.bincount(labels[idx]), [210, 60, 27, 3])
    assert not np.array_equal(idx, proportional_subsample(labels, 300, seed=1))
    balanced = balanced_subsample(labels, 300, seed=0)
    assert np.bincount(labels[balanced])[3] == 10  # all it has; the others share the rest


@pytest.mark.slow
def test_protocol_c_learns_from_its_training_set(tmp_path):
    """Protocol C fine-tunes the pretrained encoder's last stages: trained on 200 real digit
    scans it must beat the same training on 20 of them, on 100 held-out scans, and mirror
    augmentation must be switchable (recorded in the result)."""
    from elfs_bench.finetune import FinetuneConfig, protocol_c, trunk_features

    _write_digit_tree(str(tmp_path), train_per_class=20, test_per_class=10)
    paths, labels = [], []
    for split in ("train", "test"):
        for path in sorted(glob.glob(os.path.join(tmp_path, split, "*", "*.png"))):
            paths.append(path)
            labels.append(int(os.path.basename(os.path.dirname(path))))
    trunk = trunk_features(paths)
    y = np.asarray(labels)
    train, test = np.arange(200), np.arange(200, 300)
    assert trunk.shape[:2] == (300, 2) and trunk.dtype == np.float16
    config = FinetuneConfig(steps=60, threads=2)
    full = protocol_c(trunk[train], y[train], trunk[test], y[test], 10, seed=0, config=config)
    tiny = np.random.default_rng(0).choice(train, size=20, replace=False)
    small = protocol_c(trunk[tiny], y[tiny], trunk[test], y[test], 10, seed=0, config=config)
    assert full.accuracy > small.accuracy + 0.05, (full.accuracy, small.accuracy)
    assert full.accuracy > 0.6 and full.info["flip"] is True
    no_flip = FinetuneConfig(steps=10, flip=False, shift=False, threads=2)
    again = protocol_c(trunk[tiny], y[tiny], trunk[test], y[test], 10, seed=0, config=no_flip)
    assert again.info["flip"] is False and again.info["steps"] == 10


def test_make_class_tree_writes_a_long_tailed_grayscale_subset(tmp_path):
    """Generalisation sets: K classes kept, counts falling by the ratio asked, one channel."""
    import make_class_tree
    from PIL import Image

    counts = make_class_tree.long_tail_counts(np.array([500, 500, 40, 500]), 200, 10.0)
    assert counts[0] == 200 and counts[-1] == 20  # head / tail = the imbalance ratio
    assert np.all(np.diff(counts[[0, 1, 3]]) < 0) and counts[2] == 40  # capped by what exists

    out = str(tmp_path / "digits5")
    args = ["--source", "digits", "--classes", "5", "--imbalance", "4", "--grayscale"]
    make_class_tree.main([*args, "--cache-dir", str(tmp_path), "--out", out])
    train = {c: os.listdir(os.path.join(out, "train", c)) for c in os.listdir(out + "/train")}
    test = {c: os.listdir(os.path.join(out, "test", c)) for c in os.listdir(out + "/test")}
    assert len(train) == 5 and set(train) == set(test)
    sizes = sorted(len(files) for files in train.values())
    assert sizes[-1] / sizes[0] == pytest.approx(4.0, rel=0.1)
    first = os.path.join(out, "train", next(iter(train)), train[next(iter(train))][0])
    assert Image.open(first).mode == "L"
    assert not os.path.exists(out + ".partial")
    with pytest.raises(SystemExit, match="already exists"):  # never writes over a folder
        make_class_tree.main([*args, "--out", out])
    assert sorted(os.listdir(os.path.join(out, "train", next(iter(train))))) == sorted(
        train[next(iter(train))]
    )


def test_explore_draw_balanced_validation_is_disjoint_and_even():
    """explore_selection's --val-per-class: the same count of every class, never in the pool."""
    from explore_selection import draw

    labels = np.repeat(np.arange(4), [400, 120, 60, 20])  # long-tailed, rarest 20
    pool, val = draw(labels, pool=300, val=0, seed=3, val_per_class=10)
    assert np.bincount(labels[val], minlength=4).tolist() == [10, 10, 10, 10]
    assert pool.size == 300 and np.intersect1d(pool, val).size == 0
    # the pool keeps the data's proportions (drawn uniformly from the rest): the head dominates
    assert np.bincount(labels[pool], minlength=4)[0] > 150
    plain_pool, plain_val = draw(labels, pool=300, val=100, seed=3)
    assert plain_val.size == 100 and np.intersect1d(plain_pool, plain_val).size == 0


def test_explore_finished_runs_sees_rows_another_process_appends(tmp_path):
    """explore_selection's resume set is read from the file, not remembered: a row appended
    after the first read (by a second process sharing the file) counts as done at once."""
    from explore_selection import _finished_runs

    out = tmp_path / "explore.jsonl"
    assert _finished_runs(str(out)) == set()
    row = {"method": "random", "rate": 90.0, "seed": 0, "protocol": "A", "accuracy": 0.5}
    out.write_text(json.dumps(row) + "\n\n")  # a blank line is ignored
    assert _finished_runs(str(out)) == {("random", 90.0, 0, "A")}
    with open(out, "a") as f:
        f.write(json.dumps({**row, "protocol": "C"}) + "\n")
    assert _finished_runs(str(out)) == {("random", 90.0, 0, "A"), ("random", 90.0, 0, "C")}


def test_explore_d2_aum_keeps_none_of_the_hard_end_cut_and_prefers_low_aum():
    """explore_selection's "d2_aum": the budget, distinct, none of ELFS's hard-end cut; D2's
    difficulty is the negated AUM, so the survivors it keeps have a lower mean AUM (harder)
    than the survivors as a whole and than D2 keeps when handed the AUM unnegated."""
    from elfs_bench.methods import hard_end_survivors
    from explore_selection import Artefacts, select

    from fiftyone_elfs.selection.baselines import d2_prune

    rng = np.random.default_rng(4)
    centres = rng.normal(size=(3, 16)) * 0.7  # overlapping: the AUM spreads
    X = (centres[rng.integers(0, 3, 300)] + rng.normal(size=(300, 16))).astype(np.float32)
    art = Artefacts(X, 3, seed=0, clustering="kmeans")
    picked = select("d2_aum", art, 60, seed=0)
    assert picked.size == 60 and np.unique(picked).size == 60
    survivors = hard_end_survivors(art.aum(), 60)[0]
    assert survivors.size < 300  # something was cut
    assert np.setdiff1d(picked, survivors).size == 0
    assert art.aum()[picked].mean() < art.aum()[survivors].mean()
    # with the sign reversed (easy preferred) D2 keeps easier samples than "d2_aum" does
    easy_first = survivors[d2_prune(X[survivors], 60, difficulty=art.aum()[survivors], seed=0)]
    assert art.aum()[picked].mean() < art.aum()[easy_first].mean() - 0.2


def test_oracle_labels_reach_the_accuracy_and_keep_the_clusterings_errors():
    """explore_selection's calibration labels: exactly the asked share right; the samples left
    wrong keep the label the (mapped) clustering gave them; what was right stays right."""
    from explore_selection import oracle_labels

    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 2000)
    pseudo = (y + (rng.random(2000) < 0.5) * rng.integers(1, 5, 2000)) % 5  # about 60% right
    pseudo = (pseudo * 3 + 1) % 5  # cluster ids permuted: the matching must undo it
    mapped = (pseudo * 2 + 3) % 5  # the inverse permutation
    for accuracy in (0.7, 0.9, 1.0):
        got = oracle_labels(pseudo, y, accuracy, seed=1)
        assert np.mean(got == y) == pytest.approx(accuracy, abs=1e-3)
        assert np.all(got[mapped == y] == y[mapped == y])
        left_wrong = got != y
        assert np.array_equal(got[left_wrong], mapped[left_wrong])
    # below the clustering's own accuracy nothing is corrected
    assert np.array_equal(oracle_labels(pseudo, y, 0.1, seed=1), mapped)


def test_cross_validated_probe_labels_predict_each_sample_without_its_own_label():
    """feature_ceiling's probe pseudo-labels: right on separated classes, and a sample whose
    label is wrong gets its neighbourhood's class (its own label was held out of the fit)."""
    from feature_ceiling import cross_validated_probe_labels

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 100)
    X = (rng.normal(size=(300, 6)) + 6.0 * np.eye(6)[y]).astype(np.float32)
    noisy = y.copy()
    noisy[[5, 150, 250]] = [2, 0, 1]  # three wrong labels
    pred = cross_validated_probe_labels(X, noisy, folds=5, seed=0)
    assert pred.shape == y.shape
    assert np.mean(pred == y) >= 0.99
    assert pred[[5, 150, 250]].tolist() == [0, 1, 2]


def _small_inputs(X: np.ndarray, n_classes: int, tmp_path, **extra):
    """A method's label-free inputs for features ``X``, with short proxy and TEMI runs."""
    from elfs_bench.methods import ArtefactCache, LabelFreeInputs, MethodParams

    return LabelFreeInputs(
        X=X.astype(np.float32),
        pixels=None,
        paths=[],
        n_classes=n_classes,
        artefacts=ArtefactCache(str(tmp_path)),
        params=MethodParams(proxy_epochs=5, temi_epochs=3, temi_heads=2),
        **extra,
    )


def test_quality_encoder_method_selects_on_the_quality_embeddings(tmp_path):
    """`elfs_default_lite2` clusters, trains its proxy and measures trust on the quality
    encoder's embeddings (asked for on first use only), not on the default ones; the default
    method on the same inputs never asks for them."""
    from elfs_bench.methods import (
        METHODS,
        LabelFreeInputs,
        MethodContext,
    )
    from sklearn.datasets import make_blobs

    from fiftyone_elfs.pseudo_labels import cluster_accuracy

    quality, y = make_blobs(n_samples=300, centers=3, cluster_std=0.5, random_state=0)
    noise = np.random.default_rng(0).normal(size=(300, 8))  # no class structure at all
    calls = []

    def quality_embeddings() -> np.ndarray:
        calls.append(1)
        return quality.astype(np.float32)

    inputs = _small_inputs(noise, 3, tmp_path, quality_embeddings=quality_embeddings)
    ctx = MethodContext(inputs)
    default = METHODS["elfs_default"].fn(ctx, 60, 0)
    assert calls == []
    lite2 = METHODS["elfs_default_lite2"].fn(ctx, 60, 0)
    assert lite2.info["encoder"] == "lite2" and "encoder" not in default.info
    assert cluster_accuracy(y, lite2.pseudo_labels) > 0.95
    assert cluster_accuracy(y, default.pseudo_labels) < 0.6
    assert lite2.indices.size == 60
    with pytest.raises(ValueError, match="no 'lite2' embeddings"):
        LabelFreeInputs(inputs.X, None, [], 3, inputs.artefacts, inputs.params).features("lite2")


def _two_overlapping_blobs(tmp_path, seed: int):
    """400 points in two overlapping 2-D blobs plus 6 dims of small noise, and a method context
    on them (2 classes)."""
    from elfs_bench.methods import MethodContext
    from sklearn.datasets import make_blobs

    X, _ = make_blobs(n_samples=400, centers=[[0, 0], [3, 0]], cluster_std=1.0, random_state=seed)
    X = np.hstack([X, np.random.default_rng(seed).normal(scale=0.1, size=(400, 6))])
    return X, MethodContext(_small_inputs(X, 2, tmp_path))


def test_knnmix_candidate_cuts_the_hardest_by_its_mixed_ranking(tmp_path):
    """`elfs_ccs_knnmix`: the heads' kNN agreement is a share in [0, 1], lowest between the
    overlapping blobs; CCS keeps none of the hardest beta share by the mean rank of it and the
    AUM; its second TEMI fit gives the pseudo-labels `_difficulty` gave (same seed)."""
    from elfs_bench.methods import METHODS, _difficulty, _temi_heads_agreement
    from scipy.stats import rankdata

    X, ctx = _two_overlapping_blobs(tmp_path, seed=1)
    picked = METHODS["elfs_ccs_knnmix"].fn(ctx, 80, 0)
    assert picked.indices.size == 80 and np.unique(picked.indices).size == 80
    assert picked.info["same_labels_as_difficulty"] is True
    agreement = _temi_heads_agreement(ctx, 0)[0]["agreement"]
    assert agreement.min() >= 0 and agreement.max() <= 1
    boundary = np.abs(X[:, 0] - 1.5) < 0.5
    assert agreement[boundary].mean() < agreement[~boundary].mean() - 0.01
    score = (rankdata(_difficulty(ctx, 0, "temi")[0]["aum"]) + rankdata(agreement)) / 2
    hardest = np.argsort(score, kind="stable")[: int(np.floor(picked.info["beta"] * 400))]
    assert picked.info["beta"] > 0 and np.intersect1d(hardest, picked.indices).size == 0


def test_cut_kcenter_candidate_keeps_none_of_the_cut_and_spreads_over_the_rest(tmp_path):
    """`elfs_cut_kcenter`: none of the hardest beta share by the TEMI AUM is kept, and greedy
    k-center on the rest covers it (L2-normalised rows) better than the same number of random
    survivors do."""
    from elfs_bench.methods import METHODS, _difficulty

    from fiftyone_elfs.selection import rank_hardest_first

    X, ctx = _two_overlapping_blobs(tmp_path, seed=2)
    picked = METHODS["elfs_cut_kcenter"].fn(ctx, 40, 0)
    assert picked.indices.size == 40 and np.unique(picked.indices).size == 40
    cut = picked.info["cut"]
    assert cut == int(np.floor(picked.info["beta"] * 400 + 1e-9)) and cut > 0
    hardest = rank_hardest_first(_difficulty(ctx, 0, "temi")[0]["aum"])[:cut]
    assert np.intersect1d(hardest, picked.indices).size == 0
    survivors = np.setdiff1d(np.arange(400), hardest)

    unit = X / np.linalg.norm(X, axis=1, keepdims=True)  # k-center covers the unit rows

    def covering_radius(centres: np.ndarray) -> float:
        d = np.linalg.norm(unit[survivors, None, :] - unit[None, centres, :], axis=2)
        return float(d.min(axis=1).max())

    rng = np.random.default_rng(0)
    random_radii = [covering_radius(rng.choice(survivors, 40, replace=False)) for _ in range(5)]
    assert covering_radius(picked.indices) < min(random_radii)


@pytest.mark.slow
def test_benchmark_reuses_selections_on_a_larger_test_split(smoke_run):
    """--selections-from scores another run's selections on another test split without making
    them again; a run on another pool or with other method settings is refused."""
    argv = list(smoke_run["argv"])
    source_dir = smoke_run["summary"]["run_dir"]
    argv[argv.index("--run-name") + 1] = "smoke-test50"
    argv[argv.index("--protocols") + 1] = "A"
    rescored = main([*argv, "--test-size", "50", "--selections-from", "smoke"])
    assert rescored["computed"] == len(SMOKE_METHODS) and rescored["errors"] == 0
    for method in SMOKE_METHODS:
        name = f"{method}__r70__s0"
        with open(os.path.join(source_dir, "selections", f"{name}.json")) as f:
            made = json.load(f)
        with open(os.path.join(rescored["run_dir"], "selections", f"{name}.json")) as f:
            reused = json.load(f)
        assert reused["indices"] == made["indices"]
        assert reused["info"]["selection_from_run"] == "smoke"
        with open(os.path.join(rescored["run_dir"], "raw", f"{name}__A.json")) as f:
            result = json.load(f)
        assert result["data"]["test_size"] == 50 and result["method_info"]["selection_from_run"]

    other_pool = [*argv, "--run-name", "smoke-pool150", "--pool-size", "150"]
    with pytest.raises(SystemExit, match="pool .* is not this run's"):
        main([*other_pool, "--selections-from", "smoke"])
    other_params = [*argv, "--run-name", "smoke-proxy21", "--proxy-epochs", "21"]
    with pytest.raises(SystemExit, match="other method settings"):
        main([*other_params, "--selections-from", "smoke"])
    with pytest.raises(SystemExit, match="not a filled run folder"):
        main([*argv, "--run-name", "smoke-x", "--selections-from", "no-such-run"])


def test_report_lists_each_seeds_paired_difference(tmp_path):
    """The tables' paired differences come from the same seed of random, and the per-seed
    table shows each one (a seed random lacks is left out of every summary)."""
    from elfs_bench.report import write_report

    raw = tmp_path / "run" / "raw"
    raw.mkdir(parents=True)
    accuracy = {
        ("random", 0): 0.50, ("random", 1): 0.60,
        ("elfs_default", 0): 0.53, ("elfs_default", 1): 0.59, ("elfs_default", 2): 0.90,
    }  # fmt: skip
    for (method, seed), acc in accuracy.items():
        row = {"method": method, "protocol": "B", "rate": 90, "seed": seed, "accuracy": acc}
        (raw / f"{method}__r90__s{seed}__B.json").write_text(json.dumps(row))
    write_report(str(tmp_path / "run"))
    table = (tmp_path / "run" / "table_B.md").read_text()
    per_seed = table.split("## Paired difference per seed")[1].split("##")[0]
    assert "| elfs_default | s0 +3.00, s1 -1.00 |" in per_seed
    assert "s2" not in per_seed and "| random |" not in per_seed
    paired = table.split("## Paired difference to random")[1].split("##")[0]
    assert "| elfs_default | +1.00 ± 2.83 (2) |" in paired  # seed 2 has no random partner
    assert "## Gap closure" not in table  # no supervised reference in this run


def test_report_header_names_the_commits_its_rows_were_made_at(tmp_path):
    """A run resumed across commits names each commit once, in the order its rows finished, and
    how many rows came from a tree with local changes; more than three: the first and the last."""
    from elfs_bench.report import write_report

    def header(made: list[tuple[str, str, bool, str]]) -> str:
        raw = tmp_path / "run" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        for old in raw.iterdir():
            old.unlink()
        for seed, (method, commit, dirty, finished) in enumerate(made):
            row = {"method": method, "protocol": "A", "rate": 50, "seed": seed, "accuracy": 0.5}
            row.update(commit=commit * 40, dirty=dirty, finished_at=finished)
            (raw / f"{method}__r50__s{seed}__A.json").write_text(json.dumps(row))
        write_report(str(tmp_path / "run"))
        return (tmp_path / "run" / "table_A.md").read_text().split("## Accuracy")[0]

    # file order a, b, a; finished b first
    made = [("m1", "a", False, "2026-12-02"), ("m2", "b", True, "2026-12-01")]
    made.append(("m3", "a", False, "2026-12-03"))
    assert f"commits `{'b' * 12}`, `{'a' * 12}` (1 of 3 rows with local changes)." in header(made)
    five = [(f"m{i}", c, True, f"2026-12-0{i}") for i, c in enumerate("cdefg", 1)]
    assert f"5 commits from `{'c' * 12}` to `{'g' * 12}` (with local changes)." in header(five)


def test_report_gap_closure_pairs_seeds_and_skips_a_reference_within_the_noise(tmp_path):
    """Gap closure divides the method's paired gain by supervised CCS's over the seeds all
    three share, and is left out where the reference gains under one point."""
    from elfs_bench.report import write_report

    raw = tmp_path / "run" / "raw"
    raw.mkdir(parents=True)
    accuracy = {
        (70, "random", 0): 0.50, (70, "random", 1): 0.60,
        (70, "supervised_ccs", 0): 0.54, (70, "supervised_ccs", 1): 0.64,
        (70, "elfs_default", 0): 0.51, (70, "elfs_default", 1): 0.61, (70, "elfs_default", 2): 0.9,
        (90, "random", 0): 0.50, (90, "supervised_ccs", 0): 0.505, (90, "elfs_default", 0): 0.6,
    }  # fmt: skip
    for (rate, method, seed), acc in accuracy.items():
        row = {"method": method, "protocol": "C", "rate": rate, "seed": seed, "accuracy": acc}
        (raw / f"{method}__r{rate}__s{seed}__C.json").write_text(json.dumps(row))
    write_report(str(tmp_path / "run"))
    gap = (tmp_path / "run" / "table_C.md").read_text().split("## Gap closure")[1].split("##")[0]
    # 70%: +1 point of +4 possible on seeds 0-1 (seed 2 has no partner); 90%: reference +0.5
    assert "| elfs_default | +25% (2) | – (reference +0.50) |" in gap
    assert "| supervised_ccs |" not in gap and "| random |" not in gap


def test_pool_adaptation_trains_only_the_last_stages_and_caches_its_features(tmp_path, monkeypatch):
    """The adapted encoder (`elfs_bench.adaptation`, an issue-13 lever) changes only
    ``blocks[5]``, ``blocks[6]`` and ``conv_head`` of the shipped Lite0, keeps every batch norm's
    ImageNet statistics, reports at the steps asked, and its features are cached by the file
    list: a second call reads them back without training."""
    import torch
    from elfs_bench import adaptation

    from fiftyone_elfs.embeddings.efficientnet_lite import load_efficientnet_lite

    _write_digit_tree(str(tmp_path), train_per_class=13, test_per_class=0)
    paths = sorted(glob.glob(os.path.join(tmp_path, "train", "*", "*.png")))
    pixels = adaptation.load_pixels(paths)
    assert pixels.shape == (130, 3, 128, 128) and 0 <= pixels.min() and pixels.max() <= 1
    reports = []
    weights = adaptation.adapt(
        pixels, steps=2, seed=0, on_steps=lambda s, loss, w: reports.append((s, loss)), every=1
    )
    assert [s for s, _ in reports] == [1, 2] and all(np.isfinite(loss) for _, loss in reports)
    shipped = load_efficientnet_lite("lite0").state_dict()
    trained = ("blocks.5.", "blocks.6.", "conv_head.")
    changed = {name for name, value in weights.items() if not torch.equal(value, shipped[name])}
    assert set(weights) == {name for name in shipped if name.startswith(trained)}
    assert changed and not any("running_" in name for name in changed)  # ImageNet's statistics
    assert any(name.startswith("blocks.5.") for name in changed)
    X = adaptation.embed(weights, pixels)
    assert X.shape == (130, 1280) and X.dtype == np.float32 and np.isfinite(X).all()
    assert not np.allclose(X, adaptation.embed(None, pixels), atol=1e-4)

    with pytest.raises(ValueError, match="at least 128 images"):
        adaptation.adapt(pixels[:100], steps=1)
    first = adaptation.cached_adapted_embeddings(paths, str(tmp_path / "cache"), steps=1)

    def no_training(*args, **kwargs):
        raise AssertionError("trained again instead of reading the cache")

    monkeypatch.setattr(adaptation, "adapt", no_training)
    again = adaptation.cached_adapted_embeddings(paths, str(tmp_path / "cache"), steps=1)
    assert np.array_equal(first, again)
