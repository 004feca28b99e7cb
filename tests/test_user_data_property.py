"""Property (issue 15): for random sequences of stage calls, keys and deletions on a dataset with
the user's own fields, tags and saved views, nothing the user created is ever changed.

Some keys collide with the user's names on purpose ("mine": fields mine_pseudo_label,
mine_aum, tag mine_coreset, view mine-coreset), and some calls pass the user's tag. Every call
either succeeds or raises `ElfsInputError`; after each one the user's data is compared with the
start, and the package's own bookkeeping is clean (no staging field, journal entry or lease;
no run without results). Three seeded sequences of 7 calls (reproducible: the seed is in the
test id).
"""

from __future__ import annotations

import random
import uuid

import fiftyone as fo
import pytest
from dataset_state import snapshot

import fiftyone_elfs as elfs
from fiftyone_elfs import dataset_io, journal, leases
from fiftyone_elfs.errors import ElfsInputError

KEYS = ("mine", "a", "b")
USER_FIELDS = ["mine_pseudo_label", "mine_aum", "notes", "ground_truth", "elfs_embedding"]
USER_TAGS = ("mine_coreset", "keep")
USER_VIEWS = ("mine-coreset", "favs")


@pytest.fixture(scope="module")
def user_dataset(base_dataset):
    ds = base_dataset.take(40, seed=3).clone(name=f"elfs-property-{uuid.uuid4().hex[:6]}")
    ids = ds.values("id")
    labels = [fo.Classification(label=f"u{i % 3}") for i in range(len(ids))]
    ds.set_values("mine_pseudo_label", dict(zip(ids, labels, strict=True)), key_field="id")
    ds.set_values("mine_aum", {i: float(n) for n, i in enumerate(ids)}, key_field="id")
    ds.set_values("notes", {i: "mine" for i in ids[::2]}, key_field="id")
    ds.select(ids[:5]).tag_samples("mine_coreset")
    ds.select(ids[5:8]).tag_samples("keep")
    ds.save_view("mine-coreset", ds.match_tags("mine_coreset"), description="my picks")
    ds.save_view("favs", ds.match_tags("keep"))
    yield ds
    ds.delete()


def _user_state(ds):
    state = snapshot(ds, fields=USER_FIELDS)
    return {
        "schema": {f: state["schema"].get(f) for f in USER_FIELDS},
        "values": state["values"],
        "tags": [sorted(set(t) & set(USER_TAGS)) for t in state["tags"]],
        "views": {v: state["views"].get(v) for v in USER_VIEWS},
    }


def _actions(rng: random.Random, tmp_path):
    kmeans = dict(clustering="kmeans", embeddings_field="elfs_embedding")
    return [
        lambda ds, k: elfs.compute_pseudo_labels(
            ds, key=k, n_clusters=rng.choice([3, 4]), **kmeans
        ),
        lambda ds, k: elfs.compute_difficulty(
            ds, key=k, embeddings_field="elfs_embedding", epochs=2
        ),
        lambda ds, k: elfs.select_coreset(
            ds, key=k, budget_count=rng.randint(3, 12), tag=rng.choice([None, *USER_TAGS])
        ),
        lambda ds, k: elfs.select_more(ds, key=k, budget_count=3),
        lambda ds, k: elfs.compute_visualization(
            ds, key=k, layout_method="pca", embeddings_field="elfs_embedding"
        ),
        lambda ds, k: elfs.run_pipeline(
            ds, key=k, budget_count=6, n_clusters=3, epochs=2, visualize=False, **kmeans
        ),
        lambda ds, k: elfs.export_coreset(
            ds, str(tmp_path / uuid.uuid4().hex), key=k, formats=["labelstudio"]
        ),
        lambda ds, k: elfs.delete_key(ds, k),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_sequence_of_calls_changes_what_the_user_created(user_dataset, tmp_path, seed):
    ds = user_dataset.clone()
    rng = random.Random(seed)
    actions = _actions(rng, tmp_path)
    start = _user_state(ds)
    log = []
    try:
        for _ in range(7):
            index, key = rng.randrange(len(actions)), rng.choice(KEYS)
            try:
                actions[index](ds, key)
                log.append((index, key, "ok"))
            except ElfsInputError as e:
                log.append((index, key, str(e)[:60]))
            assert _user_state(ds) == start, log
            ds.reload()
            assert not [f for f in ds.get_field_schema() if f.startswith("elfs_staging_")], log
            assert dataset_io.staging_collections(ds) == [], log
            assert journal.entries(ds) == [], log
            assert leases._collection().count_documents({"_id": {"$regex": f"^{ds._doc.id}:"}}) == 0
            for run_key in ds.list_runs():
                assert ds.load_run_results(run_key, load_view=False) is not None, log
        assert any(outcome == "ok" for *_, outcome in log), log  # the sequence did something
    finally:
        ds.delete()
