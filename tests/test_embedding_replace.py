"""Replacing a key's embeddings (another image size or model, ``overwrite=True``) keeps the old
vectors and their run until the new vectors are all computed; they are replaced at the end, in
the record step that writes a fresh field. A refusal (no image readable), an exception or a
Ctrl-C on the way leaves the field, its values, the run and its config exactly as they were.

Real images, the real encoder, the real database; chunks of 8 rows, batches of 4.
"""

from __future__ import annotations

import numpy as np
import pytest
from dataset_state import snapshot

import fiftyone_elfs as elfs
from fiftyone_elfs import dataset_io, embedding_chunks

N = 20
CHUNK = 8
KEY = "rp"
FIELD = f"{KEY}_embedding"
RUN = f"{KEY}_embeddings"
OPTIONS = dict(key=KEY, batch_size=4, image_size=32)


@pytest.fixture
def embedded(base_dataset, monkeypatch):
    """N real images with the key's embeddings at 32 px (and nothing else of ELFS)."""
    monkeypatch.setenv(embedding_chunks.CHUNK_ENV, str(CHUNK))
    ds = base_dataset.take(N, seed=7).clone()
    ds.delete_sample_field("elfs_embedding")
    ds.delete_run("elfs_embeddings") if "elfs_embeddings" in ds.list_runs() else None
    elfs.compute_embeddings(ds, **OPTIONS)
    yield ds
    embedding_chunks.clear(dataset_io.dataset_id(ds), KEY)
    ds.delete()


def _state(ds):
    """The field's values by sample id, the run's config and results, and what a user sees."""
    ds.reload()
    if RUN not in ds.list_runs() or not ds.has_sample_field(FIELD):
        return {}, None, None, snapshot(ds)  # gone (what the bug did)
    config = ds.get_run_info(RUN).config.serialize()
    results = ds.load_run_results(RUN, load_view=False).serialize()
    vectors = dict(zip(*ds.values(["id", FIELD]), strict=True))
    return vectors, config, results, snapshot(ds)


def _assert_unchanged(ds, before):
    vectors, config, results, seen = _state(ds)
    assert seen == before[3]
    assert config == before[1] and results == before[2]
    assert vectors.keys() == before[0].keys()
    for sample_id, vector in before[0].items():
        np.testing.assert_array_equal(vectors[sample_id], vector)


def _interrupt_after(n_rows, exception=KeyboardInterrupt):
    """A progress callback that raises `exception` once more than `n_rows` images are done."""

    def progress(fraction, label):
        if fraction * N > n_rows and fraction < 1:
            raise exception(label)

    return progress


def test_no_readable_image_refuses_another_image_size_and_keeps_the_old_embeddings(embedded):
    moved = {i: f"/nonexistent/moved/{i}.png" for i in embedded.values("id")}
    embedded.set_values("filepath", moved, key_field="id")
    before = _state(embedded)
    assert len(before[0]) == N and all(v is not None for v in before[0].values())

    with pytest.raises(elfs.ElfsInputError, match=f"None of the {N} images could be read"):
        elfs.compute_embeddings(embedded, **{**OPTIONS, "image_size": 48})
    _assert_unchanged(embedded, before)
    with pytest.raises(elfs.ElfsInputError, match="could be read"):  # nor with overwrite=True
        elfs.compute_embeddings(embedded, **OPTIONS, overwrite=True)
    _assert_unchanged(embedded, before)
    assert embedding_chunks.count(dataset_io.dataset_id(embedded), KEY) == 0


@pytest.mark.parametrize("change", [{"overwrite": True}, {"image_size": 48}])
def test_an_interrupted_replacement_keeps_the_old_embeddings_and_run(embedded, change):
    before = _state(embedded)
    with pytest.raises(KeyboardInterrupt):
        elfs.compute_embeddings(embedded, **{**OPTIONS, **change}, progress=_interrupt_after(CHUNK))
    _assert_unchanged(embedded, before)
    # the chunks computed so far stay for the rerun, which resumes from them (another size)
    # or starts over (overwrite=True recomputes every vector by definition)
    assert embedding_chunks.count(dataset_io.dataset_id(embedded), KEY) >= 1
    done = elfs.compute_embeddings(embedded, **{**OPTIONS, **change})
    resumed = 0 if change.get("overwrite") else CHUNK
    assert (done["n_resumed"], done["n_computed"], done["n_reused"]) == (resumed, N - resumed, 0)
    config = embedded.get_run_info(RUN).config
    assert config.image_size == change.get("image_size", 32)
    assert config.vectors_version != before[1]["vectors_version"]


def test_a_failure_after_the_encoder_keeps_the_old_embeddings(embedded, monkeypatch):
    """An error of any kind once the vectors are computed (here the first chunk insert)."""

    def broken(*args):
        raise MemoryError("no memory left")

    before = _state(embedded)
    monkeypatch.setattr(embedding_chunks, "store", broken)
    with pytest.raises(MemoryError):
        elfs.compute_embeddings(embedded, **{**OPTIONS, "model": "efficientnet-lite0-prehead"})
    _assert_unchanged(embedded, before)


def test_a_replacement_keeps_the_old_vectors_while_computing_then_replaces_them(embedded):
    elfs.compute_pseudo_labels(
        embedded, key=KEY, n_clusters=3, clustering="kmeans", embeddings_field=FIELD
    )
    before = _state(embedded)
    seen = []

    def progress(fraction, label):  # the old field and run are there all the way
        embedded.reload()
        seen.append((embedded.has_sample_field(FIELD), RUN in embedded.list_runs()))

    done = elfs.compute_embeddings(embedded, **{**OPTIONS, "image_size": 48}, progress=progress)
    assert seen and all(s == (True, True) for s in seen)
    assert (done["n_computed"], done["n_reused"], done["n_skipped"]) == (N, 0, 0)

    vectors, config, _, _ = _state(embedded)
    assert vectors.keys() == before[0].keys()
    assert all(v is not None for v in vectors.values())
    assert not any(np.array_equal(vectors[i], before[0][i]) for i in vectors)
    assert config["image_size"] == 48
    assert config["vectors_version"] not in (None, before[1]["vectors_version"])
    assert embedding_chunks.count(dataset_io.dataset_id(embedded), KEY) == 0
    # the pseudo-labels were clustered from the replaced vectors: the next stage says so
    with pytest.raises(elfs.ElfsInputError, match="compute_pseudo_labels"):
        elfs.compute_difficulty(embedded, key=KEY, embeddings_field=FIELD, epochs=2)


def test_shards_of_another_image_size_embed_every_image_for_the_replacement(embedded):
    """Shards embed what the replacing `compute_embeddings` will need (every image, not only
    those without a vector), which then resumes them all; the old vectors stay meanwhile."""
    before = _state(embedded)
    shards = [elfs.embed_shard(embedded, s, 2, **{**OPTIONS, "image_size": 48}) for s in (0, 1)]
    assert sum(s["n_samples"] for s in shards) == N and shards[-1]["last"]
    _assert_unchanged(embedded, before)
    done = elfs.compute_embeddings(embedded, **{**OPTIONS, "image_size": 48})
    assert (done["n_resumed"], done["n_computed"], done["n_reused"]) == (N, 0, 0)
    assert embedded.get_run_info(RUN).config.image_size == 48


def test_an_image_rewritten_since_it_was_embedded_is_embedded_again(base_dataset, tmp_path):
    """Audit 'media' #2: a rerun reused every stored vector, so an image rewritten in place
    (re-rendered, cropped, replaced) was selected by its old picture's vector, and nothing
    said so. Copies of the images: the test rewrites one."""
    import os
    import shutil

    import fiftyone as fo

    from fiftyone_elfs.stages import embeddings

    sources = base_dataset.take(6, seed=3).values("filepath")
    copies = [str(tmp_path / f"{i}{os.path.splitext(p)[1]}") for i, p in enumerate(sources)]
    for source, copy in zip(sources, copies, strict=True):
        shutil.copyfile(source, copy)
    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath=copy) for copy in copies])
    try:
        elfs.compute_embeddings(ds, **OPTIONS)
        ids, before = ds.values(["id", FIELD])
        version = embeddings.vectors_version(ds, FIELD)
        shutil.copyfile(sources[5], copies[0])  # image 0 is now the picture of image 5
        again = elfs.compute_embeddings(ds, **OPTIONS)
        assert (again["n_changed"], again["n_reused"], again["n_computed"]) == (1, 5, 1)
        after = ds.values(FIELD)
        np.testing.assert_allclose(after[0], before[5], atol=1e-4)  # the new picture's vector
        for k in range(1, 6):
            np.testing.assert_array_equal(after[k], before[k])
        # the pseudo-labels of the old vectors are stale now: the field's version changed
        assert embeddings.vectors_version(ds, FIELD) != version
        assert elfs.compute_embeddings(ds, **OPTIONS)["n_changed"] == 0  # nothing since
        assert ds.values("id") == ids
    finally:
        ds.delete()
