"""The benchmark harness's data handling and command lines (benchmarks/), on tiny digit trees.

Each test writes a few dozen of scikit-learn's real 8x8 digit scans as PNG class trees into a
temporary folder; the runs use protocol A only (a linear probe on the embeddings), so each takes
seconds. Everything is written under pytest's temporary folders.
"""

from __future__ import annotations

import json
import os
import re
import sys
import unicodedata

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

from elfs_bench import data as bdata  # noqa: E402
from elfs_bench.cli import main  # noqa: E402


def _tree(root: str, plan: dict[str, dict[str, tuple[int, int]]]) -> str:
    """Writes ``{split: {folder: (digit, n)}}`` as PNGs (``split`` "" = no split folder; a
    folder may hold subfolders, e.g. "one/batch1"); each digit's scans are used once."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    used: dict[int, int] = {}
    for split, folders in plan.items():
        for folder, (digit, n) in folders.items():
            path = os.path.join(root, split, folder)
            os.makedirs(path, exist_ok=True)
            members = np.flatnonzero(digits.target == digit)
            start = used.get(digit, 0)
            for i in members[start : start + n]:
                pixels = (digits.images[i] * (255.0 / 16.0)).round().astype(np.uint8)
                Image.fromarray(pixels, mode="L").save(os.path.join(path, f"{i:04d}.png"))
            used[digit] = start + n
    return root


def _argv(data_dir: str, tmp_path, run_name: str, *extra: str, cache: str = "cache") -> list:
    return [
        "--data-dir", data_dir,
        "--rates", "70",
        "--seeds", "0",
        "--protocols", "A",
        "--threads", "1",
        "--run-name", run_name,
        "--results-dir", str(tmp_path / "results"),
        "--cache-dir", str(tmp_path / cache),
        *extra,
    ]  # fmt: skip


def _selection(tmp_path, run_name: str, method: str) -> dict:
    with open(tmp_path / "results" / run_name / "selections" / f"{method}__r70__s0.json") as f:
        return json.load(f)


# --------------------------------------------------------------------------- finding 1


def test_artefact_folder_depends_on_the_encoder_the_size_and_the_embeddings():
    """The artefact cache key holds what the embeddings depend on, not only the file lists."""
    split = bdata.Split("pool", ["/a.png", "/b.png"], np.array([0, 1]))
    data = bdata.BenchData(["x", "y"], split, bdata.Split("val", [], np.array([], int)), split)
    data.pool.embeddings = np.ones((2, 4), np.float32)
    base = bdata.artefact_folder("/c", data, "efficientnet-lite0", 128)
    assert base.startswith(os.path.join("/c", "artefacts", data.key, "efficientnet-lite0-128-"))
    assert bdata.artefact_folder("/c", data, "efficientnet-lite0", 64) != base
    assert bdata.artefact_folder("/c", data, "efficientnet-lite2", 128) != base
    assert bdata.artefact_folder("/c", data, "efficientnet-lite0", 128) == base  # stable
    data.pool.embeddings = np.full((2, 4), 2.0, np.float32)  # e.g. other encoder weights
    assert bdata.artefact_folder("/c", data, "efficientnet-lite0", 128) != base


def test_another_image_size_never_reuses_the_artefacts_of_the_first(tmp_path):
    """Finding 1: a run with another --image-size on the same data and cache computes its own
    pseudo-labels and ZCore scores; a run with the same settings still reuses them."""
    tree = _tree(str(tmp_path / "tree"), {
        "train": {"a": (0, 30), "b": (1, 20), "c": (2, 12)},
        "test": {"a": (0, 6), "b": (1, 6), "c": (2, 6)},
    })  # fmt: skip
    common = ["--methods", "zcore,elfs_kmeans", "--zcore-draws", "500", "--proxy-epochs", "3"]
    main(_argv(tree, tmp_path, "px64", *common, "--image-size", "64"))
    main(_argv(tree, tmp_path, "px96", *common, "--image-size", "96"))
    main(_argv(tree, tmp_path, "px64-again", *common, "--image-size", "64"))
    for method in ("zcore", "elfs_kmeans"):
        assert _selection(tmp_path, "px64", method)["info"]["artefact_reused"] is False
        assert _selection(tmp_path, "px96", method)["info"]["artefact_reused"] is False, method
        again = _selection(tmp_path, "px64-again", method)
        assert again["info"]["artefact_reused"] is True
        assert again["indices"] == _selection(tmp_path, "px64", method)["indices"]
    (key,) = os.listdir(tmp_path / "cache" / "artefacts")
    folders = sorted(os.listdir(tmp_path / "cache" / "artefacts" / key))
    assert [f.rsplit("-", 1)[0] for f in folders] == [
        "efficientnet-lite0-64",
        "efficientnet-lite0-96",
    ]


# --------------------------------------------------------------------------- finding 2


def test_a_class_in_only_one_split_is_refused_before_any_embedding(tmp_path, capsys):
    """Finding 2: 'seven' (train) vs 'Seven' (test) and a train folder without images are named
    with the fix; names in NFC and NFD form are one class; nothing is embedded."""
    nfc, nfd = "caf\u00e9", unicodedata.normalize("NFD", "caf\u00e9")
    assert nfc != nfd
    tree = _tree(str(tmp_path / "tree"), {
        "train": {"seven": (7, 8), nfc: (3, 8), "zero": (0, 8), "one": (1, 0)},
        "test": {"Seven": (7, 4), nfd: (3, 4), "zero": (0, 4), "one": (1, 4)},
    })  # fmt: skip
    with pytest.raises(SystemExit) as refused:
        main(_argv(tree, tmp_path, "r2", "--methods", "random"))
    message = str(refused.value)
    assert "'seven'" in message and "'Seven'" in message and "letter case" in message
    assert "'one': its train folder holds no images" in message
    assert "café" not in message  # NFC and NFD spellings are the same class
    assert "Fix:" in message
    assert not os.path.exists(tmp_path / "cache" / "features")  # refused before embedding

    # with the test folder renamed to the train folder's spelling, the data loads: 4 classes
    os.rename(os.path.join(tree, "test", "Seven"), os.path.join(tree, "test", "seven"))
    _tree(tree, {"train": {"one": (1, 8)}})
    data = bdata.load_bench_data(data_dir=tree, cache_dir=str(tmp_path / "cache"))
    assert data.classes == sorted(["seven", nfc, "zero", "one"])
    assert len(data.test) == 16 and set(data.test.labels.tolist()) == {0, 1, 2, 3}


# --------------------------------------------------------------------------- finding 3


def test_images_in_subfolders_count_for_their_class_and_hidden_ones_do_not(tmp_path):
    """Finding 3: as FiftyOne's ImageClassificationDirectoryTree importer reads a tree: images
    in subfolders of a class folder are labelled by the class folder; hidden files, hidden
    folders and hidden class folders are skipped."""
    root = _tree(str(tmp_path / "train"), {
        "": {"one/batch1": (1, 5), "one/batch2/deeper": (1, 4), "zero": (0, 6),
             "zero/.thumbnails": (0, 3), ".ipynb_checkpoints": (2, 3)},
    })  # fmt: skip
    hidden = os.path.join(root, "zero", ".shadow.png")
    with open(hidden, "wb") as f:
        f.write(b"not an image")
    paths, names = bdata.list_class_tree(root)
    assert names == ["one"] * 9 + ["zero"] * 6
    rel = [os.path.relpath(p, root) for p in paths]
    assert rel[0].startswith(os.path.join("one", "batch1")) and all(
        ".thumbnails" not in r and ".shadow" not in r and "ipynb" not in r for r in rel
    )
    assert any(r.startswith(os.path.join("one", "batch2", "deeper")) for r in rel)


# --------------------------------------------------------------------------- finding 4


def test_an_unreadable_image_is_named_and_the_fixed_data_runs_in_the_same_folder(tmp_path):
    """Finding 4: the error names the file; no config.json is left by the failed run, and a
    config.json without any result (left by an earlier version) is no settings conflict."""
    tree = _tree(str(tmp_path / "tree"), {
        "train": {"a": (0, 10), "b": (1, 10)},
        "test": {"a": (0, 4), "b": (1, 4)},
    })  # fmt: skip
    bad = os.path.join(tree, "train", "b", "IMG_0001.png")
    with open(bad, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n truncated")
    argv = _argv(tree, tmp_path, "r4", "--methods", "random")
    with pytest.raises(SystemExit) as failed:
        main(argv)
    assert bad in str(failed.value) and "Fix:" in str(failed.value)
    run_dir = tmp_path / "results" / "r4"
    assert not (run_dir / "config.json").exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps({"data_key": "an earlier, failed run"}))
    os.remove(bad)
    summary = main(argv)
    assert summary["computed"] == 1 and summary["errors"] == 0
    config = json.loads((run_dir / "config.json").read_text())
    assert config["data_key"] != "an earlier, failed run"


# --------------------------------------------------------------------------- finding 5


def test_balanced_without_a_size_cuts_every_class_to_the_smallest(tmp_path):
    """Finding 5: --balanced without --pool-size / --test-size balances both splits down to
    their smallest class and records it."""
    tree = _tree(str(tmp_path / "tree"), {
        "train": {"a": (0, 30), "b": (1, 12), "c": (2, 6)},
        "test": {"a": (0, 9), "b": (1, 5), "c": (2, 7)},
    })  # fmt: skip
    data = bdata.load_bench_data(
        data_dir=tree, balanced=True, val_fraction=0.0, cache_dir=str(tmp_path / "cache")
    )
    assert np.bincount(data.pool.labels).tolist() == [6, 6, 6]
    assert np.bincount(data.test.labels).tolist() == [5, 5, 5]
    assert data.source["draw"] == "balanced"
    assert data.source["balanced_pool_per_class"] == 6
    assert data.source["balanced_test_per_class"] == 5
    assert data.source["pool_size_arg"] is None
    with_val = bdata.load_bench_data(data_dir=tree, balanced=True, cache_dir=str(tmp_path))
    drawn = np.concatenate([with_val.pool.labels, with_val.val.labels])
    assert np.bincount(drawn).tolist() == [6, 6, 6]
    plain = bdata.load_bench_data(data_dir=tree, val_fraction=0.0, cache_dir=str(tmp_path))
    assert np.bincount(plain.pool.labels).tolist() == [30, 12, 6]
    assert "balanced_pool_per_class" not in plain.source


# --------------------------------------------------------------------------- finding 6


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--rates", "50,100", "percentages in [0, 100)"),
        ("--rates", "", "at least one"),
        ("--protocols", "A,D", "comma list of A, B, C"),
        ("--methods", "random,nosuch", "Unknown method(s) ['nosuch']"),
        ("--pool-size", "0", "must be >= 1"),
        ("--val-fraction", "1", "in [0, 1)"),
        ("--beta-grid", "0.1,1.5", "[0, 1)"),
    ],
)
def test_run_benchmark_refuses_bad_options_before_reading_data(
    tmp_path, capsys, option, value, says
):
    """Finding 6: argparse-style errors (exit 2, no traceback) before any data is read (the
    data folder here does not exist)."""
    argv = _argv(str(tmp_path / "no-such-data"), tmp_path, "r6", "--methods", "random")
    with pytest.raises(SystemExit) as refused:
        main([*argv, option, value])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and says in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--rates", "99.9", "budget 0"),
        ("--rates", "100", "[0, 100)"),
        ("--methods", "random,nosuch", "'nosuch': unknown method"),
        ("--methods", "elfs_auto@nosuch", "unknown variant 'nosuch'"),
        ("--methods", "elfs_ccs_bx", "takes a number"),
        ("--protocols", "A,D", "comma list of A, B, C"),
    ],
)
def test_explore_refuses_bad_options_before_reading_data(tmp_path, capsys, option, value, says):
    """Finding 6 for explore_selection.py: the same, and a rate that keeps no image of the pool
    (budget 0, a ZeroDivisionError before) is refused."""
    from explore_selection import main as explore

    argv = ["--data-dir", str(tmp_path / "none"), "--pool", "120", "--protocols", "A"]
    argv += ["--methods", "random", "--out", str(tmp_path / "x.jsonl")]
    with pytest.raises(SystemExit) as refused:
        explore([*argv, option, value])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and says in err


def test_explore_knows_every_method_name_it_documents():
    """The explore method validator accepts the names its results and READMEs use."""
    from explore_selection import method_problem

    for name in (
        "random", "elfs_auto@temi", "elfs_auto@lite2-temi", "ccs_mix@temi", "cut_kcenter@temi",
        "elfs_ccs_b0.2", "elfs_ccs_h0.25", "pc_cut_ccs", "pc_cut_ccs0.3", "strat_ccs_lf",
        "strat_ccs0.1", "trim_random0.1", "typiclust", "typical_h", "cell_incellg",
        "elfs_auto_ramp_floor", "elfs_auto_ramp_floor0.7", "elfs_de@oracle85", "d2_aum@probe300",
    ):  # fmt: skip
        assert method_problem(name) is None, name
    assert "unknown method" in method_problem("nosuch")
    assert "takes a number" in method_problem("trim_random")


# --------------------------------------------------------------------------- finding 7


def test_explore_val_per_class_leaves_every_class_in_the_pool():
    """Finding 7: --val-per-class takes at most half of a class's images for validation."""
    from explore_selection import _tail_coverage, draw

    labels = np.repeat(np.arange(3), [80, 30, 8])
    pool, val = draw(labels, pool=200, val=0, seed=3, val_per_class=10)
    assert np.bincount(labels[val], minlength=3).tolist() == [10, 10, 4]
    assert np.intersect1d(pool, val).size == 0
    assert np.bincount(labels[pool], minlength=3).tolist() == [70, 20, 4]  # all the rest
    from explore_selection import val_quota

    assert val_quota(labels, 10) == {0: 10, 1: 10, 2: 4}
    # the tail's coverage is measured on the smallest class the pool holds
    y_pool = labels[pool]
    tail_members = np.flatnonzero(y_pool == 2)
    keep_no_tail = np.flatnonzero(y_pool != 2)[:20]
    assert _tail_coverage(y_pool, keep_no_tail) == 0.0
    assert _tail_coverage(y_pool, np.concatenate([keep_no_tail, tail_members])) > 1.0


def test_explore_runs_on_one_labelled_folder_and_caps_the_validation_share(tmp_path, capsys):
    """Findings 7 and 8 end to end: explore_selection.py on DIR/<class>/* (no train/ folder),
    --val-per-class larger than half of the tail class; protocol A on validation."""
    from explore_selection import main as explore

    tree = _tree(str(tmp_path / "flat"), {"": {"a": (0, 40), "b": (1, 20), "c": (2, 6)}})
    out = tmp_path / "explore.jsonl"
    explore([
        "--data-dir", tree, "--pool", "40", "--val-per-class", "5", "--protocols", "A",
        "--methods", "random,kcenter", "--rates", "50", "--seeds", "0", "--threads", "1",
        "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
    ])  # fmt: skip
    printed = capsys.readouterr().out
    assert "has no train/" in printed
    assert "class 'c' has 6 images: 3 go to validation instead of 5" in printed
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["method"] for r in rows] == ["random", "kcenter"]
    assert all(r["pool_classes"] == 3 and 0 <= r["accuracy"] <= 1 for r in rows)


# --------------------------------------------------------------------------- finding 8


def test_split_test_draws_a_stratified_seeded_test_split_from_one_folder(tmp_path):
    """Finding 8: DIR/<class>/* without train/ and test/ is refused with the way forward, and
    --split-test draws the test split per class (seeded, disjoint, every class in both)."""
    from fiftyone_elfs.sample_data import write_digit_images

    folder = write_digit_images(str(tmp_path / "digits"), per_class=10)
    with pytest.raises(bdata.BenchDataError, match="--split-test"):
        bdata.load_bench_data(data_dir=folder, cache_dir=str(tmp_path))
    data = bdata.load_bench_data(
        data_dir=folder, split_test=0.3, val_fraction=0.0, cache_dir=str(tmp_path)
    )
    assert np.bincount(data.test.labels).tolist() == [3] * 10
    assert np.bincount(data.pool.labels).tolist() == [7] * 10
    assert not set(data.pool.paths) & set(data.test.paths)
    assert data.source["kind"] == "class-folder" and data.source["split_test"] == 0.3
    again = bdata.load_bench_data(
        data_dir=folder, split_test=0.3, val_fraction=0.0, cache_dir=str(tmp_path)
    )
    other = bdata.load_bench_data(
        data_dir=folder, split_test=0.3, val_fraction=0.0, data_seed=1, cache_dir=str(tmp_path)
    )
    assert again.test.paths == data.test.paths and other.test.paths != data.test.paths
    with pytest.raises(bdata.BenchDataError, match="already has train/"):
        tree = _tree(str(tmp_path / "tree"), {"train": {"a": (0, 2)}, "test": {"a": (0, 2)}})
        bdata.load_bench_data(data_dir=tree, split_test=0.3, cache_dir=str(tmp_path))


def test_split_test_runs_end_to_end(tmp_path):
    """The documented command: run_benchmark.py --data-dir DIR --split-test 0.3."""
    tree = _tree(str(tmp_path / "flat"), {"": {"a": (0, 12), "b": (1, 12), "c": (2, 12)}})
    summary = main(_argv(tree, tmp_path, "split", "--methods", "random", "--split-test", "0.3"))
    assert summary["computed"] == 1 and summary["errors"] == 0
    with open(tmp_path / "results" / "split" / "raw" / "random__r70__s0__A.json") as f:
        result = json.load(f)
    assert result["data"]["kind"] == "class-folder" and result["data"]["test_size"] == 12


# --------------------------------------------------------------------------- finding 9


def test_benchmark_readme_documents_every_option_and_protocol_c():
    """Finding 9: every run_benchmark.py option, protocol C and its outputs are described in
    benchmarks/README.md; --list-methods gives elfs_default's current weak-trust rule."""
    from elfs_bench.cli import build_parser
    from elfs_bench.methods import METHODS

    with open(os.path.join(REPO, "benchmarks", "README.md")) as f:
        readme = f.read()
    options = [o for a in build_parser()._actions for o in a.option_strings if o.startswith("--")]
    missing = [
        o for o in options if o != "--help" and not re.search(re.escape(o) + r"(?![\w-])", readme)
    ]
    assert not missing, missing
    for words in ("**C, fine-tuning", "table_C.md", "plot_C.png", "__<A|B|C>.json", "shift"):
        assert words in readme, words
    assert "typical selection where it is weak" in METHODS["elfs_default"].description


# --------------------------------------------------------------------------- finding 10


@pytest.mark.parametrize(
    "bad", [["--classes", "-2"], ["--classes", "0"], ["--classes", "1"], ["--classes", "12"],
            ["--test-per-class", "0"], ["--per-class", "0"]],
)  # fmt: skip
def test_make_class_tree_refuses_impossible_counts(tmp_path, bad):
    """Finding 10: K outside 2..(classes of the source) and empty splits are refused."""
    import make_class_tree

    out = tmp_path / "out"
    with pytest.raises(SystemExit) as refused:
        make_class_tree.main(
            ["--source", "digits", "--cache-dir", str(tmp_path), "--out", str(out), *bad]
        )
    assert refused.value.code != 0 and not out.exists()
