"""Issue 15 item 3: an interrupted embedding stage resumes from the chunks it stored.

Real images, the real encoder, the real database. Chunks of 8 rows (``ELFS_EMBED_CHUNK_ROWS``,
batches of 4), interrupted by an exception from the progress callback after 2 stored chunks:
the user's field is not there yet, the rerun embeds only the images no chunk holds (counted at
the encoder), and the vectors equal an uninterrupted run's; nothing is left in the chunk store
afterwards. The SIGKILL case (``embeddings:stored_chunk:2``, 2 of 4 chunks stored, the rerun
resuming 8 samples) is in tests/test_faults.py with the other kill points.
"""

from __future__ import annotations

import numpy as np
import pytest

import fiftyone_elfs as elfs
from fiftyone_elfs import dataset_io, embedding_chunks
from fiftyone_elfs.embeddings import encoders

N = 20
CHUNK = 8
KEY = "r"
FIELD = f"{KEY}_embedding"
OPTIONS = dict(key=KEY, batch_size=4, image_size=32)


class Interrupted(Exception):
    pass


@pytest.fixture
def fresh(base_dataset, monkeypatch):
    """N real images without embeddings, chunks of CHUNK rows."""
    monkeypatch.setenv(embedding_chunks.CHUNK_ENV, str(CHUNK))
    ds = base_dataset.take(N, seed=3).clone()
    ds.delete_sample_field("elfs_embedding")
    yield ds
    embedding_chunks.clear(dataset_io.dataset_id(ds), KEY)
    ds.delete()


@pytest.fixture
def embedded_rows(monkeypatch):
    """Counts the images the encoder embeds."""
    rows = []
    original = encoders.ImageEncoder.embed_batch

    def spy(self, batch):
        rows.append(len(batch))
        return original(self, batch)

    monkeypatch.setattr(encoders.ImageEncoder, "embed_batch", spy)
    return rows


def _uninterrupted(fresh) -> dict[str, np.ndarray]:
    reference = fresh.clone()
    try:
        elfs.compute_embeddings(reference, **OPTIONS)
        by_path = dict(zip(*reference.values(["filepath", FIELD]), strict=True))
    finally:
        reference.delete()
    return by_path


def _assert_resumes(fresh, embedded_rows, want):
    ds_id = dataset_io.dataset_id(fresh)
    assert embedding_chunks.count(ds_id, KEY) == 2
    assert fresh.get_field(FIELD) is None  # the user's field only when the stage completes
    embedded_rows.clear()
    results = elfs.compute_embeddings(fresh, **OPTIONS)
    assert results["n_resumed"] == 2 * CHUNK
    assert sum(embedded_rows) == N - 2 * CHUNK  # only the rest is embedded
    got = dict(zip(*fresh.values(["filepath", FIELD]), strict=True))
    assert got.keys() == want.keys()
    for path, vector in want.items():
        np.testing.assert_allclose(got[path], vector, rtol=0, atol=1e-6)
    assert embedding_chunks.count(ds_id, KEY) == 0


def test_an_exception_mid_stage_keeps_the_stored_chunks(fresh, embedded_rows):
    want = _uninterrupted(fresh)
    assert sum(embedded_rows) == N

    def progress(fraction, label):
        if fraction * N > 2 * CHUNK:  # the first report after the second chunk was stored
            raise Interrupted(label)

    with pytest.raises(Interrupted):
        elfs.compute_embeddings(fresh, progress=progress, **OPTIONS)
    _assert_resumes(fresh, embedded_rows, want)


def test_another_image_size_does_not_reuse_stored_chunks(fresh, embedded_rows):
    def progress(fraction, label):
        if fraction * N > CHUNK:
            raise Interrupted(label)

    with pytest.raises(Interrupted):
        elfs.compute_embeddings(fresh, progress=progress, **OPTIONS)
    embedded_rows.clear()
    results = elfs.compute_embeddings(fresh, **{**OPTIONS, "image_size": 48})
    assert results["n_resumed"] == 0 and sum(embedded_rows) == N
    assert fresh.first()[FIELD].shape == (1280,)


def test_delete_key_removes_the_stored_chunks_of_an_interrupted_run(fresh):
    def progress(fraction, label):
        if fraction * N > CHUNK:
            raise Interrupted(label)

    with pytest.raises(Interrupted):
        elfs.compute_embeddings(fresh, progress=progress, **OPTIONS)
    assert embedding_chunks.count(dataset_io.dataset_id(fresh), KEY) == 1
    elfs.delete_key(fresh, KEY)
    assert embedding_chunks.count(dataset_io.dataset_id(fresh), KEY) == 0


def test_a_failed_chunk_insert_stops_the_stage_and_keeps_the_chunks_before_it(
    fresh, embedded_rows, monkeypatch
):
    """Chunks are stored while the next one is embedded; the insert's error still stops the
    stage (it is not lost in the writer thread), the chunks stored before it stay, no field
    appears, and the rerun resumes from them."""
    want = _uninterrupted(fresh)
    store = embedding_chunks.store
    calls = []

    def failing_second_insert(*args):
        calls.append(args[1])
        if len(calls) == 2:
            raise Interrupted("the database went away")
        return store(*args)

    monkeypatch.setattr(embedding_chunks, "store", failing_second_insert)
    with pytest.raises(Interrupted, match="went away"):
        elfs.compute_embeddings(fresh, **OPTIONS)
    assert len(calls) == 2  # stopped at the failure, not after embedding everything
    assert embedding_chunks.count(dataset_io.dataset_id(fresh), KEY) == 1
    assert fresh.get_field(FIELD) is None
    monkeypatch.setattr(embedding_chunks, "store", store)
    embedded_rows.clear()
    results = elfs.compute_embeddings(fresh, **OPTIONS)
    assert results["n_resumed"] == CHUNK and sum(embedded_rows) == N - CHUNK
    got = dict(zip(*fresh.values(["filepath", FIELD]), strict=True))
    for path, vector in want.items():
        np.testing.assert_allclose(got[path], vector, rtol=0, atol=1e-6)


def _stored_rows(ds) -> list[int]:
    run = {"$regex": f"^{dataset_io.dataset_id(ds)}:{KEY}:"}
    return [len(doc["ids"]) for doc in embedding_chunks._collection().find({"run": run})]


def test_batches_larger_than_a_chunk_are_stored_as_several_documents(fresh, embedded_rows):
    # A chunk is rounded up to whole batches; a batch over the chunk cap made one document over
    # MongoDB's 16 MB limit (batch_size above about 3,276 for 1,280-d vectors): DocumentTooLarge
    # on every run. Here the cap is CHUNK rows and a batch 12.
    want = _uninterrupted(fresh)

    def progress(fraction, label):
        if fraction * N >= 12:  # the first batch (one chunk of 12 rows) was embedded
            raise Interrupted(label)

    with pytest.raises(Interrupted):
        elfs.compute_embeddings(fresh, progress=progress, **{**OPTIONS, "batch_size": 12})
    assert _stored_rows(fresh) == [CHUNK, 12 - CHUNK]
    results = elfs.compute_embeddings(fresh, **{**OPTIONS, "batch_size": 12})
    assert results["n_resumed"] == 12
    got = dict(zip(*fresh.values(["filepath", FIELD]), strict=True))
    for path, vector in want.items():
        np.testing.assert_allclose(got[path], vector, rtol=0, atol=1e-6)


def test_an_image_an_interrupted_run_could_not_read_is_tried_again(fresh, tmp_path):
    # The resume reused the stored failure: a file back in place was still "file not found".
    first = fresh.first()
    copy = tmp_path / "moved.png"
    copy.write_bytes(open(first.filepath, "rb").read())
    first.filepath = str(copy)
    first.save()
    hidden = tmp_path / "hidden.png"
    copy.rename(hidden)

    def progress(fraction, label):
        if fraction * N > 2 * CHUNK:
            raise Interrupted(label)

    with pytest.raises(Interrupted):
        elfs.compute_embeddings(fresh, progress=progress, **OPTIONS)
    assert sum(_stored_rows(fresh)) == 2 * CHUNK
    hidden.rename(copy)  # the file is back (a remounted share, a restored backup)
    results = elfs.compute_embeddings(fresh, **OPTIONS)
    assert (results["n_skipped"], results["n_resumed"]) == (0, 2 * CHUNK - 1)
    assert fresh[first.id][FIELD].shape == (1280,)
