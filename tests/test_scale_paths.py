"""Issue 16 (FiftyOne side): no database command carries more than `id_chunk_rows` sample ids.

MongoDB refuses commands over 16 MB (an ordered `select` of about 440k ids), so at ImageNet size
every read, write, tag and layout by id must go in chunks or without ids. Building 1.28M samples
in CI is too slow, so these tests force a tiny chunk (``ELFS_ID_CHUNK_ROWS``) on the real
database with real images: every `select` FiftyOne receives is recorded and must stay within the
chunk, and the results must equal those of the unchunked paths and of per-sample reads.
"""

from __future__ import annotations

import fiftyone.core.collections as foc
import numpy as np
import pytest

import fiftyone_elfs as elfs
from fiftyone_elfs import dataset_io
from fiftyone_elfs.embeddings.projection import layout_2d

CHUNK = 7


@pytest.fixture
def selects(monkeypatch):
    """Forces chunks of CHUNK ids and records the number of ids of every `select` call."""
    monkeypatch.setenv(dataset_io.ID_CHUNK_ENV, str(CHUNK))
    sizes: list[int] = []
    original = foc.SampleCollection.select

    def spy(self, sample_ids, *args, **kwargs):
        sizes.append(1 if isinstance(sample_ids, str) else len(list(sample_ids)))
        return original(self, sample_ids, *args, **kwargs)

    monkeypatch.setattr(foc.SampleCollection, "select", spy)
    return sizes


@pytest.fixture
def small(base_dataset):
    """40 of the real images with their embeddings and true labels."""
    ds = base_dataset.take(40, seed=1).clone()
    yield ds
    ds.delete()


def test_reads_by_id_in_chunks_equal_per_sample_reads(small, selects):
    ids = small.values("id")
    rng = np.random.default_rng(0)
    few = list(rng.permutation(ids)[:8])  # < 1/4 of the samples: chunked selects
    many = list(rng.permutation(ids)[:35])  # most of them: one scan, ordered here
    for wanted in (few, many):
        selects.clear()
        labels = dataset_io.read_labels(small, "ground_truth", [*wanted, "0" * 24])
        assert labels == [small[i].ground_truth.label for i in wanted] + [None]
        got_ids, X = dataset_io.read_embeddings(small, "elfs_embedding", ids=wanted)
        assert got_ids == wanted
        np.testing.assert_array_equal(X, np.stack([small[i].elfs_embedding for i in wanted]))
        got_ids, values = dataset_io.read_values(small, "filepath", wanted)
        assert values == [small[i].filepath for i in wanted]
        assert max(selects, default=0) <= CHUNK
        # labels and values of most of the collection: one scan, ordered here; embeddings are
        # read a chunk at a time whatever the share (one chunk of decoded vectors in memory)
        chunks_of = -(-len(wanted) // CHUNK)
        assert len(selects) == (chunks_of if wanted is many else 3 * 2)  # 8/9 ids: 2 chunks


def test_writes_and_tags_in_chunks(small, selects):
    ids = small.values("id")[::2]  # 20 ids: 3 chunks
    dataset_io.write_values(small, "mine", ids, [float(i) for i in range(len(ids))])
    assert small.exists("mine").values("id") == ids
    assert small.exists("mine").values("mine") == [float(i) for i in range(len(ids))]
    dataset_io.replace_tag(small, "picked", ids)
    assert small.match_tags("picked").values("id") == ids
    dataset_io.replace_tag(small, "picked", ids[:3])
    assert small.count_sample_tags() == {"picked": 3}
    assert selects and max(selects) <= CHUNK


@pytest.mark.parametrize("drop", [0, 3])
def test_layout_of_a_reordered_view_stores_each_point_with_its_sample(small, selects, drop):
    """The embedding plot of a view in another order than the dataset's, with `drop` samples
    lacking embeddings: the brain run holds every sample's own point, without a view listing
    the ids (the `exclude` of the few left out is within a chunk)."""
    view = small.sort_by("filepath", reverse=True)
    for sample in view.limit(drop):
        sample.clear_field("elfs_embedding")
        sample.save()
    brain_key = elfs.compute_visualization(
        view, key="elfs", embeddings_field="elfs_embedding", layout_method="pca"
    )
    ids, X = dataset_io.read_embeddings(view, "elfs_embedding")
    want = dict(zip(ids, layout_2d(X, "pca", seed=0), strict=True))
    results = small.load_brain_results(brain_key)
    assert len(results.sample_ids) == 40 - drop
    for sample_id, point in zip(results.sample_ids, results.points, strict=True):
        np.testing.assert_allclose(point, want[sample_id], rtol=1e-5, atol=1e-5)
    assert "Select" not in repr(results.view._stages)  # no id list in the run document
    assert max(selects, default=0) <= CHUNK


def _small_pipeline(ds, key: str, epochs: int, visualize: bool) -> None:
    """k-means pipeline on the cached embeddings, 12 of the samples selected."""
    elfs.run_pipeline(
        ds,
        key=key,
        budget_count=12,
        n_clusters=4,
        clustering="kmeans",
        embeddings_field="elfs_embedding",
        epochs=epochs,
        visualize=visualize,
    )


def test_pipeline_with_tiny_chunks_equals_the_default(base_dataset, monkeypatch):
    """Every stage after the embeddings, chunked at 7 ids, selects what the default selects."""
    outcomes = []
    for chunk in (None, CHUNK):
        if chunk is not None:
            monkeypatch.setenv(dataset_io.ID_CHUNK_ENV, str(chunk))
        ds = base_dataset.take(60, seed=2).clone()
        try:
            _small_pipeline(ds, "s", epochs=3, visualize=False)
            outcomes.append(
                (
                    sorted(ds.match_tags("s_coreset").values("filepath")),
                    dict(zip(*ds.values(["filepath", "s_coreset_region"]), strict=True)),
                )
            )
        finally:
            ds.delete()
    assert len(outcomes[0][0]) == 12
    assert outcomes[0] == outcomes[1]


def test_embeddings_read_in_chunks_equal_one_read_and_errors_count_every_chunk(small, selects):
    one_read = dataset_io.read_embeddings(small, "elfs_embedding")  # CHUNK=7: 6 chunks
    assert len(selects) == -(-40 // CHUNK) and max(selects) <= CHUNK
    ids, vectors = small.values(["id", "elfs_embedding"])
    assert one_read[0] == ids
    np.testing.assert_array_equal(one_read[1], np.stack(vectors))
    # a wrong dimension in a late chunk is found, and the counts cover every chunk
    last = small.skip(38).first()
    last.elfs_embedding = np.zeros(3, dtype=np.float32)
    last.save()
    with pytest.raises(elfs.ElfsInputError, match=r"different dimensions.*\{\d+: 39, 3: 1\}"):
        dataset_io.read_embeddings(small, "elfs_embedding")


def test_pipeline_reads_the_embeddings_from_the_database_once(base_dataset, monkeypatch):
    reads = []
    original = dataset_io._read_vector_rows

    def counted(view, field, ids=None):
        reads.append(field)
        return original(view, field, ids)

    monkeypatch.setattr(dataset_io, "_read_vector_rows", counted)
    ds = base_dataset.take(60, seed=3).clone()
    try:
        _small_pipeline(ds, "once", epochs=2, visualize=True)
        assert reads == ["elfs_embedding"]  # check, pseudo-labels, difficulty and plot share it
        assert len(ds.load_brain_results("once_umap").points) == 60
        # outside the pipeline every read goes to the database, and sees a new value
        with dataset_io.reuse_embeddings():
            first = dataset_io.read_embeddings(ds, "elfs_embedding")[1]
            ids = ds.values("id")
            dataset_io.write_values(ds, "elfs_embedding", ids, list(first[:, ::-1].copy()))
            again = dataset_io.read_embeddings(ds, "elfs_embedding")[1]
        np.testing.assert_array_equal(again, first[:, ::-1])
        assert reads == ["elfs_embedding"] * 3
    finally:
        ds.delete()


def test_staged_values_are_stored_as_fiftyones_set_values_stores_them(small, selects):
    import fiftyone as fo

    ids = small.values("id")[::3]  # 14 ids, staged in 2 chunks of 7
    n = len(ids)
    floats = [float(i) / 3 for i in range(n)]
    ints = list(range(n))
    strs = [f"region_{i % 3}" for i in range(n)]
    names = [f"cluster_{i % 4}" for i in range(n)]
    before = dict(zip(*small.values(["id", "last_modified_at"]), strict=True))
    columns = {
        "w_float": floats,
        "w_int": ints,
        "w_str": strs,
        "w_label": dataset_io.ClassificationColumn(names, floats),
        "w_vec": [np.full(3, i, dtype=np.float32) for i in range(n)],
    }
    kinds = {f: dataset_io.column_kind(v) for f, v in columns.items()}
    collection = dataset_io.new_staging_collection(small)
    loaded = small[ids[0]]  # a sample object in memory sees the committed values
    for start in (0, CHUNK):
        chunk = {f: v[start : start + CHUNK] for f, v in columns.items()}
        dataset_io.stage_rows(collection, ids[start : start + CHUNK], chunk, kinds)
    assert collection in dataset_io.staging_collections()
    assert not small.has_field("w_float")  # staged only: the samples are untouched
    dataset_io.commit_staged(small, collection, kinds, ids)
    assert collection not in dataset_io.staging_collections()
    assert loaded.w_float == floats[0] and loaded.w_label.label == names[0]
    dataset_io.write_values(small, "r_float", ids, floats)
    dataset_io.write_values(small, "r_int", ids, ints)
    dataset_io.write_values(small, "r_str", ids, strs)
    dataset_io.write_values(small, "r_label", ids, dataset_io.classifications(names, floats))
    assert max(selects, default=0) <= CHUNK
    dataset_io.write_values(small, "r_vec", ids, columns["w_vec"])
    for kind in ("float", "int", "str", "label", "vec"):
        assert type(small.get_field(f"w_{kind}")) is type(small.get_field(f"r_{kind}"))
    assert small.get_field("w_label").document_type is fo.Classification
    view = small.select(ids, ordered=True)
    assert view.values("w_float") == floats and view.values("w_int") == ints
    assert view.values("w_str") == view.values("r_str") == strs
    assert view.values("w_label.label") == names
    assert view.values("w_label.confidence") == floats
    label = view.first().w_label
    assert isinstance(label, fo.Classification) and label.id != view.last().w_label.id
    assert [v.tolist() for v in view.values("w_vec")] == [[float(i)] * 3 for i in range(n)]
    after = dict(zip(*small.values(["id", "last_modified_at"]), strict=True))
    assert all(after[i] > before[i] for i in ids)
    assert small.exists("w_float").count() == n  # the other samples are untouched


def test_column_kinds_of_the_values_stages_write_and_a_clear_refusal_of_others():
    import fiftyone as fo

    assert dataset_io.column_kind([1.5, 2, None]).field_type is fo.FloatField  # ints among floats
    assert dataset_io.column_kind([1, 2]).field_type is fo.IntField
    assert dataset_io.column_kind(["a", None]).field_type is fo.StringField
    assert dataset_io.column_kind([np.zeros(2)]).field_type is fo.VectorField
    with pytest.raises(TypeError, match="dict"):
        dataset_io.column_kind([{"a": 1}])


def test_stored_vectors_decode_as_fiftyone_decodes_them_whatever_their_shape_or_type():
    import fiftyone.core.utils as fou

    vectors = [
        np.arange(4, dtype=np.float32),
        np.arange(4, dtype=np.float32) + 1,  # same header: read from the buffer
        np.arange(6, dtype=np.float64).reshape(2, 3),
        np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)),
        np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3) + 1),
        np.arange(3, dtype=np.int64),
    ]
    stored = [fou.serialize_numpy_array(v) for v in vectors] + [b"not a vector", [1.0, 2.0]]
    decoded = dataset_io._decode_vectors(stored)
    for got, want in zip(decoded, vectors, strict=False):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.array_equal(got, want)
    assert decoded[-2:] == [b"not a vector", [1.0, 2.0]]  # left for the caller to refuse


def test_vectors_compressed_in_threads_keep_their_order():
    """Compressed on several threads, the stored vectors are the one-thread ones, in order,
    None kept where it was."""
    rng = np.random.default_rng(1)
    vectors = [rng.standard_normal(16).astype(np.float32) for _ in range(101)]
    vectors[0] = vectors[50] = vectors[100] = None
    one = dataset_io._encode_vectors(vectors, threads=1)
    for threads in (2, 3, 7, 500):
        assert dataset_io._encode_vectors(vectors, threads=threads) == one
    decoded = dataset_io._decode_vectors(one)
    for got, want in zip(decoded, vectors, strict=True):
        assert (got is None and want is None) or np.array_equal(got, want)
    assert dataset_io._encode_vectors([], threads=2) == []


def test_vectors_are_written_in_the_form_fiftyone_reads():
    """`_encode_vectors` (one .npy header per dtype and shape, fast zlib) gives bytes that
    FiftyOne's own deserializer and `_decode_vectors` read back exactly, for any layout."""
    import fiftyone.core.utils as fou

    rng = np.random.default_rng(0)
    vectors = [
        rng.standard_normal(5).astype(np.float32),
        None,
        rng.standard_normal(5).astype(np.float32),
        rng.standard_normal((3, 4)),
        np.asfortranarray(rng.standard_normal((3, 4))),  # written C-ordered, same values
        np.arange(7, dtype=np.int64),
        rng.standard_normal((2, 6)).astype(np.float16)[:, ::2],  # not contiguous
    ]
    stored = dataset_io._encode_vectors(vectors)
    assert stored[1] is None
    for got in (
        [None if b is None else fou.deserialize_numpy_array(b) for b in stored],
        dataset_io._decode_vectors(stored),
    ):
        for g, want in zip(got, vectors, strict=True):
            if want is None:
                assert g is None
                continue
            assert g.dtype == want.dtype and g.shape == want.shape and np.array_equal(g, want)


def test_a_count_leaves_out_only_the_orderings_that_end_a_view(small, monkeypatch):
    """Audit 'formscale' #2: every form change counted its target, and through the App grid's
    sort by a score that sorted every sample (3 s a count at 1M). A count now leaves out a
    sort or shuffle that ends the view; one that decides a later limit is kept."""
    from fiftyone import ViewField as F

    counted = []
    original = foc.SampleCollection.count

    def spy(self, *args, **kwargs):
        counted.append([type(s).__name__ for s in getattr(self, "_stages", [])])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(foc.SampleCollection, "count", spy)
    middle = small.match(F("elfs_embedding") != None)  # noqa: E711
    for view, n in [
        (middle.sort_by("filepath", reverse=True), len(small)),
        (middle.shuffle(seed=1).sort_by("filepath"), len(small)),
        (small.sort_by("filepath").limit(5), 5),
        (small.sort_by("filepath").limit(5).sort_by("id"), 5),
    ]:
        counted.clear()
        assert dataset_io.count(view) == dataset_io.require_nonempty(view) == n
        assert counted and not any(c and c[-1] in ("SortBy", "Shuffle") for c in counted)
