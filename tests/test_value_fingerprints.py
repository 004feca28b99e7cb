"""Fingerprints of the values a run wrote (`fiftyone_elfs.value_fingerprints`): properties on
small synthetic data, no database."""

from __future__ import annotations

import math

import numpy as np
import pytest
from bson import ObjectId

from fiftyone_elfs import value_fingerprints as vf


def _ids(n, seed=0):
    rng = np.random.default_rng(seed)
    return [str(ObjectId(rng.bytes(12))) for _ in range(n)]


def test_the_pairs_a_run_wrote_are_recognised_in_any_order_and_any_subset():
    ids = _ids(500)
    values = np.random.default_rng(1).normal(size=500).tolist()
    packed = vf.pack(ids, values)
    assert not vf.not_written(ids, values, packed).any()
    order = np.random.default_rng(2).permutation(500)[:120]  # a view: a shuffled subset
    assert not vf.not_written([ids[i] for i in order], [values[i] for i in order], packed).any()


def test_a_changed_value_a_swapped_value_or_an_unknown_sample_is_flagged():
    ids = _ids(400)
    values = np.random.default_rng(3).normal(size=400).tolist()
    packed = vf.pack(ids, values)
    changed = list(values)
    changed[7] = math.nextafter(changed[7], math.inf)  # the smallest change a float can take
    changed[8], changed[9] = changed[9], changed[8]  # two samples' values swapped
    assert np.flatnonzero(vf.not_written(ids, changed, packed)).tolist() == [7, 8, 9]
    others = _ids(300, seed=9)  # samples the run never saw, with values it wrote
    assert vf.not_written(others, values[:300], packed).sum() >= 299  # ~N / 2**32 may collide


def test_labels_and_ids_that_are_not_object_ids_are_fingerprinted_as_text():
    ids = [f"sample-{i}" for i in range(50)]
    labels = [f"cluster_{i % 4}" for i in range(50)]
    packed = vf.pack(ids, labels)
    assert not vf.not_written(ids, labels, packed).any()
    relabelled = ["cluster_0" if lab == "cluster_1" else lab for lab in labels]
    flagged = vf.not_written(ids, relabelled, packed)
    assert flagged.tolist() == [lab == "cluster_1" for lab in labels]


def test_a_number_reads_back_as_the_same_pair_whatever_its_type():
    """What MongoDB hands back: an int stored as a float, NaN, -0.0, numpy scalars."""
    ids = _ids(4)
    packed = vf.pack(ids, [3, float("nan"), -0.0, np.float32(0.5)])
    assert not vf.not_written(ids, [3.0, math.nan, 0.0, 0.5], packed).any()
    assert vf.not_written(ids, ["3", None, 1.0, 0.5], packed).tolist() == [True] * 3 + [False]


def test_nothing_recorded_flags_everything_and_lengths_must_match():
    assert vf.not_written(_ids(3), [1.0, 2.0, 3.0], vf.pack([], [])).all()
    with pytest.raises(ValueError, match="3 ids but 2 values"):
        vf.fingerprints(_ids(3), [1.0, 2.0])
