"""Bad input (issue 15 items 6-9): every case through the API and through the operators reaches
`ElfsInputError` with a message naming the problem and the fix, and the dataset (fields and
their values, tags, saved views, runs) is unchanged. Also what must not be refused: numpy
numbers, and unreadable images in the contrastive stage (skipped and reported)."""

from __future__ import annotations

import http.server
import os
import re
import threading
import uuid

import fiftyone as fo
import fiftyone.operators as foo
import numpy as np
import pytest
from dataset_state import snapshot
from fiftyone.operators.executor import ExecutionError

import fiftyone_elfs as elfs
from fiftyone_elfs import label_studio
from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.plugin.operators import queue_sharded_pipeline

PLUGIN = "@fiftyone-elfs/elfs"
KEY = "k"


def _operator_error(name: str, ds, **kwargs) -> Exception:
    """The error of the operator called from a script (`__call__`), as the App would run it:
    the ElfsInputError itself when the arguments are refused, the form's message when its
    checks refuse the target (the App shows it on the field), else the execution's
    ElfsInputError."""
    operator = foo.get_operator(f"{PLUGIN}/{name}")
    try:
        result = operator(ds, **kwargs)
    except ElfsInputError as e:
        return e
    except ExecutionError as e:
        text = str(e)
        if text.startswith("Validation error"):  # the form refused it: "... Reason: <message>"
            return ElfsInputError(text.split("Reason: ", 1)[1])
        assert "ElfsInputError: " in text, text
        return ElfsInputError(text.rsplit("ElfsInputError: ", 1)[1].strip())
    error = getattr(result, "error", None)
    assert error, f"{name} did not fail"
    assert "ElfsInputError" in error, error
    return ElfsInputError(error.rsplit("ElfsInputError: ", 1)[1].strip())


def _refused_both_ways(ds, function, operator, kwargs, match, positional=()):
    """The API and the operator both refuse with a message matching `match` and naming a fix,
    and leave the dataset as it was."""
    before = snapshot(ds)
    with pytest.raises(ElfsInputError, match=match) as api:
        function(ds, *positional, **kwargs)
    assert "Fix:" in str(api.value)
    assert snapshot(ds) == before
    call = dict(kwargs)
    if positional:
        call["export_dir"] = positional[0]
    shown = _operator_error(operator, ds, **call)
    assert "Fix:" in str(shown)
    assert str(shown) == str(api.value)
    assert snapshot(ds) == before


# --------------------------------------------------------------------------- item 6


def test_a_seed_beyond_what_the_libraries_take_is_refused_before_anything_changes(ds):
    """seed=2**64 failed when the run was recorded, after the key's coreset had been removed."""
    _refused_both_ways(
        ds,
        elfs.select_coreset,
        "select_coreset",
        dict(key=KEY, budget_count=5, mode="ccs", seed=2**64),
        r"seed.*2147418112",
    )
    assert len(ds.match_tags(f"{KEY}_coreset")) == 8


def test_both_budgets_are_refused(ds):
    _refused_both_ways(
        ds,
        elfs.select_coreset,
        "select_coreset",
        dict(key=KEY, budget_count=10, budget_fraction=0.5),
        "Both budget_fraction=0.5 and budget_count=10 were given",
    )


def test_a_budget_fraction_that_is_not_a_number_is_refused(ds):
    _refused_both_ways(
        ds,
        elfs.select_coreset,
        "select_coreset",
        dict(key=KEY, budget_fraction="abc"),
        "budget_fraction must be a number in",
    )


@pytest.mark.parametrize("bad", [dict(budget_count=0), dict(budget_count=2.5), dict()])
def test_budget_errors_are_elfs_input_errors(ds, bad):
    _refused_both_ways(ds, elfs.select_coreset, "select_coreset", dict(key=KEY, **bad), "budget")


def test_a_string_embeddings_field_is_refused(ds):
    ids = ds.values("id")
    ds.set_values("words", dict(zip(ids, ["a"] * len(ids), strict=True)), key_field="id")
    _refused_both_ways(
        ds,
        elfs.compute_pseudo_labels,
        "compute_pseudo_labels",
        dict(key="w", clustering="kmeans", n_clusters=4, embeddings_field="words"),
        "does not hold numeric vectors",
    )


def test_a_vector_holding_a_null_is_named_by_its_sample(ds):
    """One NaN written as a JSON null by another tool: the message said the field held no
    numeric vectors at all ('list') and named no sample."""
    ids = ds.values("id")
    rng = np.random.default_rng(0)
    vectors = [[float(x) for x in rng.normal(size=8)] for _ in ids]
    vectors[3][5] = None
    ds.add_sample_field("imported", fo.ListField)  # as an import of JSON lists declares it
    ds.set_values("imported", dict(zip(ids, vectors, strict=True)), key_field="id")
    _refused_both_ways(
        ds,
        elfs.compute_pseudo_labels,
        "compute_pseudo_labels",
        dict(key="w", clustering="kmeans", n_clusters=4, embeddings_field="imported"),
        rf"1 of the {len(ids)} values in 'imported' are not numeric vectors "
        rf"\(e.g. samples \['{ids[3]}'\].*exclude",
    )


def test_numpy_numbers_are_accepted_through_the_api_and_the_operator(ds):
    result = elfs.select_coreset(ds, key=KEY, budget_count=np.int64(6), beta=np.float32(0.2))
    assert result.budget == 6 and result.beta == pytest.approx(0.2)
    op = foo.get_operator(f"{PLUGIN}/select_coreset")
    op(ds, key=KEY, budget_count=np.int32(7), beta=np.float32(0.2)).raise_exceptions()
    assert len(ds.match_tags(f"{KEY}_coreset")) == 7


def test_select_more_refuses_a_label_field_that_does_not_hold_labels(ds):
    ids = ds.values("id")
    ds.set_values("notes", dict(zip(ids, ["seen"] * len(ids), strict=True)), key_field="id")
    _refused_both_ways(
        ds,
        elfs.select_more,
        "select_more",
        dict(key=KEY, budget_count=4, label_field="notes"),
        "'notes' must be a field of fo.Classification labels; it is StringField",
    )


def test_export_under_a_file_is_refused(ds, tmp_path):
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("mine")
    target = str(a_file / "export")
    _refused_both_ways(
        ds,
        elfs.export_coreset,
        "export_coreset",
        dict(key=KEY),
        "is a file",
        positional=(target,),
    )
    assert a_file.read_text() == "mine"


def test_export_with_a_missing_media_file_is_refused_before_writing(ds, tmp_path):
    selected = ds.match_tags(f"{KEY}_coreset").first()
    gone = tmp_path / "gone.jpg"
    selected.filepath = str(gone)
    selected.save()
    target = str(tmp_path / "export")
    _refused_both_ways(
        ds,
        elfs.export_coreset,
        "export_coreset",
        dict(key=KEY),
        "media files of the coreset are missing or unreadable",
        positional=(target,),
    )
    assert not os.path.exists(target)


def test_bad_prelabel_maps_are_refused(ds, tmp_path):
    cluster = sorted(set(ds.values(f"{KEY}_pseudo_label.label")))[0]
    for kwargs, match in [
        (dict(prelabel_map={cluster: "cat"}), "no classes were given"),
        (dict(classes=["cat"], prelabel_map={cluster: "emu"}), "not in classes"),
        (dict(classes=["cat"], prelabel_map={"cluster_99": "cat"}), "not clusters of this key"),
    ]:
        target = str(tmp_path / uuid.uuid4().hex)
        _refused_both_ways(
            ds, elfs.export_coreset, "export_coreset", dict(key=KEY, **kwargs), match, (target,)
        )
        assert not os.path.exists(target)


# --------------------------------------------------------------------------- item 7


def test_contrastive_scores_skip_and_report_unreadable_images(ds, tmp_path, monkeypatch):
    monkeypatch.setenv("ELFS_CACHE_DIR", str(tmp_path / "cache"))
    broken = ds.take(2, seed=0).values("id")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 not a jpeg" * 10)
    paths = {broken[0]: str(tmp_path / "missing.jpg"), broken[1]: str(corrupt)}
    ds.set_values("filepath", paths, key_field="id")
    report = elfs.compute_contrastive_scores(
        ds, key="c", epochs=1, image_size=16, width=4, batch_size=16
    )
    assert report["n_skipped"] == 2
    assert {s["id"] for s in report["skipped"]} == set(broken)
    assert set(ds.exists("c_contrastive", False).values("id")) == set(broken)
    assert len(ds.exists("c_contrastive")) == len(ds) - 2
    stored = ds.load_run_results("c_contrastive")
    assert stored.n_skipped == 2
    result = foo.get_operator(f"{PLUGIN}/compute_contrastive_scores")(
        ds, key="c", epochs=1, image_size=16, width=4, batch_size=16
    )
    result.raise_exceptions()
    assert ds.load_run_results("c_contrastive", cache=False).n_skipped == 2


def test_a_video_dataset_is_refused_naming_frames_as_the_fix():
    import fiftyone as fo

    videos = fo.Dataset(f"elfs-videos-{uuid.uuid4().hex[:6]}")
    try:
        videos.add_samples([fo.Sample(filepath=f"/videos/{i}.mp4") for i in range(4)])
        assert videos.media_type == "video"
        for function, operator, kwargs in (
            (elfs.compute_embeddings, "compute_embeddings", {}),
            (elfs.compute_contrastive_scores, "compute_contrastive_scores", {}),
            # the default 10 clusters exceed the 4 videos: the media are named first, not that
            (elfs.run_pipeline, "run_elfs_pipeline", dict(budget_count=2)),
        ):
            _refused_both_ways(
                videos,
                function,
                operator,
                dict(key="v", **kwargs),
                r"'video' samples.*to_frames\(sample_frames=True\)\.clone\(",
            )
        before = snapshot(videos)
        with pytest.raises(ElfsInputError, match="'video' samples"):
            queue_sharded_pipeline(videos, 2, key="v", budget_count=2, n_clusters=2)
        assert snapshot(videos) == before
    finally:
        videos.delete()


def test_a_grouped_dataset_is_embedded_on_its_image_slice_and_refused_on_a_video_one(ds):
    import fiftyone as fo

    grouped = fo.Dataset(f"elfs-grouped-{uuid.uuid4().hex[:6]}")
    try:
        grouped.add_group_field("group", default="image")
        samples = []
        for path in ds.take(6, seed=0).values("filepath"):
            group = fo.Group()
            samples.append(fo.Sample(filepath=path, group=group.element("image")))
            samples.append(fo.Sample(filepath="/videos/x.mp4", group=group.element("video")))
        grouped.add_samples(samples)
        report = elfs.compute_embeddings(grouped, key="g")
        assert report["n_computed"] == 6 and report["n_skipped"] == 0
        grouped.group_slice = "video"
        with pytest.raises(ElfsInputError, match="'video' samples.*select_group_slices"):
            elfs.compute_embeddings(grouped, key="g2")
    finally:
        grouped.delete()


def test_a_patches_view_is_refused_even_with_embeddings_and_its_clone_is_selected_from(ds):
    """A patches view lives in a temporary dataset: with the objects' own embeddings every stage
    ran and then FiftyOne refused to save the field ("Cannot save fields on generated views"),
    a traceback after all the work. Now refused first, naming the clone that works."""
    import fiftyone as fo

    rng = np.random.default_rng(0)

    def box(i: int) -> fo.Detection:
        return fo.Detection(
            label="thing", bounding_box=[0.1 * i, 0.1, 0.4, 0.4], emb=rng.normal(size=8).tolist()
        )

    ds.set_values("objects", [fo.Detections(detections=[box(0), box(1)]) for _ in range(len(ds))])
    ds.add_dynamic_sample_fields()
    patches = ds.to_patches("objects")
    assert len(patches) == 2 * len(ds)
    before = snapshot(ds)
    own = {"embeddings_field": "objects.emb"}
    for function, operator, kwargs in (
        (elfs.compute_embeddings, "compute_embeddings", {}),
        (elfs.run_pipeline, "run_elfs_pipeline", dict(budget_count=4, **own)),
        (elfs.compute_pseudo_labels, "compute_pseudo_labels", dict(n_clusters=2, **own)),
    ):
        with pytest.raises(ElfsInputError, match="patches view.*Fix: select among the images"):
            function(patches, key="p", **kwargs)
        shown = _operator_error(operator, patches, key="p", **kwargs)
        assert "patches view" in str(shown) and "clone(" in str(shown)
        assert snapshot(ds) == before
    objects = patches.clone(f"elfs-objects-{uuid.uuid4().hex[:6]}")
    try:
        result = elfs.run_pipeline(
            objects,
            key="p",
            budget_count=6,
            n_clusters=2,
            clustering="kmeans",
            epochs=2,
            visualize=False,
            **own,
        )
        assert result.budget == 6 and len(objects.match_tags("p_coreset")) == 6
        assert snapshot(ds) == before
    finally:
        objects.delete()


def test_a_frames_view_is_refused_and_its_clone_is_selected_from(ds):
    """The frames of videos, as the video refusal advises: a frames view embedded every frame
    and then failed to save the field; its clone, an image dataset, is what to pass."""
    import fiftyone as fo

    videos = fo.Dataset(f"elfs-videos-{uuid.uuid4().hex[:6]}")
    try:
        paths = ds.take(8, seed=0).values("filepath")
        for v in range(2):  # frames given as image files (FiftyOne samples them with ffmpeg)
            video = fo.Sample(filepath=f"/videos/{v}.mp4")
            video.metadata = fo.VideoMetadata(
                total_frame_count=4, frame_rate=1.0, duration=4.0, frame_width=32, frame_height=32
            )
            for f in range(1, 5):
                video.frames[f] = fo.Frame(filepath=paths[4 * v + f - 1])
            videos.add_sample(video)
        frames = videos.to_frames(sample_frames=False)
        assert frames.media_type == "image" and len(frames) == 8
        before = snapshot(videos)
        for function, operator, kwargs in (
            (elfs.compute_embeddings, "compute_embeddings", {}),
            # the default 10 clusters exceed the 4 videos: the media are named first, not that
            (elfs.run_pipeline, "run_elfs_pipeline", dict(budget_count=2)),
        ):
            with pytest.raises(ElfsInputError, match=r"frames view.*to_frames\(.*\)\.clone\("):
                function(frames, key="f", **kwargs)
            shown = _operator_error(operator, frames, key="f", **kwargs)
            assert "frames view" in str(shown)
            assert snapshot(videos) == before
        clone = frames.clone(f"elfs-frames-{uuid.uuid4().hex[:6]}")
        try:
            result = elfs.run_pipeline(
                clone,
                key="f",
                budget_count=3,
                n_clusters=2,
                clustering="kmeans",
                epochs=2,
                visualize=False,
            )
            assert result.budget == 3 and len(clone.match_tags("f_coreset")) == 3
        finally:
            clone.delete()
    finally:
        videos.delete()


def test_a_dataset_whose_images_are_all_unreadable_is_refused_then_embedded_once_fixed(
    ds, tmp_path
):
    """Every filepath missing (a dataset whose folder moved): one error naming the reasons and
    the fix, nothing recorded; once the paths are fixed the images embed (the failures were not
    remembered)."""
    import fiftyone as fo

    real = ds.take(5, seed=0).values("filepath")
    moved = fo.Dataset(f"elfs-moved-{uuid.uuid4().hex[:6]}")
    try:
        corrupt = tmp_path / "corrupt.jpg"
        corrupt.write_bytes(b"\xff\xd8 not a jpeg" * 10)
        moved.add_samples(
            [fo.Sample(filepath=f"/old/root/{os.path.basename(p)}") for p in real]
            + [fo.Sample(filepath=str(corrupt))]
        )
        _refused_both_ways(
            moved,
            elfs.compute_embeddings,
            "compute_embeddings",
            dict(key="m"),
            "None of the 6 images could be read.*file not found.*not a readable image",
        )
        assert moved.list_runs() == []
        fixed = dict(zip(moved.values("id")[:5], real, strict=True))
        moved.set_values("filepath", fixed, key_field="id")
        report = elfs.compute_embeddings(moved, key="m")
        assert report["n_computed"] == 5 and report["n_skipped"] == 1
        # too few readable images left for the clusters: the refusal says why there are fewer
        with pytest.raises(ElfsInputError) as refused:
            elfs.run_pipeline(moved, key="m", budget_count=2, n_clusters=6, visualize=False)
        assert str(refused.value).startswith(
            "n_clusters=6 is larger than the 5 samples to cluster (1 of the view's 6 samples "
            "have no embedding in 'm_embedding': their images could not be read"
        )
        # the user's own vectors on 4 of them: no image was read, so none is blamed
        vectors = dict(zip(moved.values("id")[:4], np.eye(4, 8).tolist(), strict=True))
        moved.set_values("mine", vectors, key_field="id")
        with pytest.raises(ElfsInputError) as refused:
            elfs.compute_pseudo_labels(moved, key="u", embeddings_field="mine", n_clusters=5)
        assert str(refused.value).startswith(
            "n_clusters=5 is larger than the 4 samples to cluster (2 of the view's 6 samples "
            "have no embedding in 'mine'). Fix:"
        )
    finally:
        moved.delete()


# --------------------------------------------------------------------------- item 8


def test_difficulty_refuses_embeddings_other_than_the_pseudo_labels_came_from(ds):
    ids = ds.values("id")
    small = np.random.default_rng(0).normal(size=(len(ids), 64)).astype(np.float32)
    ds.set_values("small_vectors", dict(zip(ids, small, strict=True)), key_field="id")
    _refused_both_ways(
        ds,
        elfs.compute_difficulty,
        "compute_difficulty",
        dict(key=KEY, embeddings_field="small_vectors", epochs=1),
        "pseudo-labels of key 'k' were computed from the embeddings 'elfs_embedding'",
    )


def test_difficulty_without_embeddings_field_names_the_field_the_pseudo_labels_came_from(ds):
    """The form said the key's own embeddings field "does not exist" where the library named the
    field to pass: the key's pseudo-labels were clustered from another key's embeddings."""
    _refused_both_ways(
        ds,
        elfs.compute_difficulty,
        "compute_difficulty",
        dict(key=KEY, epochs=1),
        "pseudo-labels of key 'k' were computed from the embeddings 'elfs_embedding', but this "
        "run would train on 'k_embedding'. Fix: pass embeddings_field='elfs_embedding'",
    )


def test_difficulty_refuses_embeddings_whose_dimension_changed_since_the_pseudo_labels(ds):
    ids = ds.values("id")
    elfs.compute_pseudo_labels(
        ds, key="d", n_clusters=4, clustering="kmeans", embeddings_field="elfs_embedding"
    )
    wide = np.random.default_rng(0).normal(size=(len(ids), 32)).astype(np.float32)
    ds.set_values("elfs_embedding", dict(zip(ids, wide, strict=True)), key_field="id")
    _refused_both_ways(
        ds,
        elfs.compute_difficulty,
        "compute_difficulty",
        dict(key="d", embeddings_field="elfs_embedding", epochs=1),
        "have 32 dimensions, but the pseudo-labels of key 'd' were computed from 1280",
    )


# --------------------------------------------------------------------------- item 9


class _EchoingServer(http.server.BaseHTTPRequestHandler):
    """Answers 401 and echoes the request's Authorization header, as a server may."""

    def do_GET(self):  # noqa: N802 - http.server's name
        body = f"bad token: {self.headers.get('Authorization')}".encode()
        self.send_response(401)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_label_studio_credentials_never_reach_a_message():
    """A tiny local HTTP server stands in for a Label Studio that echoes the token in its 401
    body (starting a real Label Studio is the slow annotation test's job)."""
    server = http.server.HTTPServer(("127.0.0.1", 0), _EchoingServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        url = f"http://alice:s3cret-pw@127.0.0.1:{port}"
        with pytest.raises(ElfsInputError) as refused:
            label_studio.get(url, "tok-123456", "/api/projects")
        text = str(refused.value)
        assert "refused the API key" in text and "Fix:" in text
        assert "s3cret-pw" not in text and "tok-123456" not in text and "alice" not in text
        assert "http://***@127.0.0.1" in text
    finally:
        server.shutdown()
        server.server_close()
    closed = f"http://bob:hunter22@127.0.0.1:{port}"  # nothing listens there any more
    with pytest.raises(ElfsInputError) as unreachable:
        label_studio.get(closed, "tok-123456", "/api/projects")
    assert "hunter22" not in str(unreachable.value) and "Fix:" in str(unreachable.value)
    assert unreachable.value.__cause__ is None  # the cause's text would repeat the URL


# --------------------------------------------------------------------------- audit (bad input)


def _images(ds, n):
    """A fresh dataset of `n` of `ds`'s images, no fields of ELFS."""
    import fiftyone as fo

    small = fo.Dataset(f"elfs-small-{uuid.uuid4().hex[:6]}")
    small.add_samples([fo.Sample(filepath=p) for p in ds.take(n, seed=0).values("filepath")])
    return small


def _set_vectors(ds, field, vectors):
    ids = ds.values("id")
    ds.set_values(field, dict(zip(ids, vectors, strict=True)), key_field="id")


def test_a_pipeline_too_small_for_its_plot_is_refused_up_front_naming_visualize_false(ds):
    """Finding 2: 3 images with the default visualize=True were refused only after the
    embeddings, pseudo-labels and difficulty had run (the embeddings written), with a fix that
    did not help. Now refused before anything, naming visualize=False; which then works."""
    small = _images(ds, 3)
    try:
        _refused_both_ways(
            small,
            elfs.run_pipeline,
            "run_elfs_pipeline",
            dict(key="p", budget_count=1, n_clusters=2, clustering="kmeans"),
            r"3 samples.*at least 4.*Fix: pass visualize=False",
        )
        assert small.list_runs() == [] and small.get_field("p_embedding") is None
    finally:
        small.delete()


@pytest.mark.parametrize(
    "vectors, n_clusters, match",
    [
        (lambda n: [np.ones(16, np.float32)] * n, 3, r"all point the same way"),
        (lambda n: [np.zeros(16, np.float32)] * n, 3, r"all zero"),
        (
            lambda n: [np.eye(16, dtype=np.float32)[i % 2] for i in range(n)],
            3,
            r"only 2 distinct directions, fewer than n_clusters=3",
        ),
        (
            lambda n: [
                np.ones(16, np.float32) + 1e-4 * np.eye(16, dtype=np.float32)[i % 16]
                for i in range(n)
            ],  # fmt: skip
            3,
            r"nearly the same direction",
        ),
    ],
    ids=["identical", "zero", "two-distinct", "nearly-constant"],
)
def test_constant_embeddings_are_refused_before_pseudo_labels_naming_the_encoder(
    ds, vectors, n_clusters, match
):
    """Finding 3: identical (or all-zero) vectors gave one non-empty cluster of 3, written with
    a self-contradictory trust sentence, and the next stage's fix was n_clusters >= 2."""
    _set_vectors(ds, "flat", vectors(len(ds)))
    _refused_both_ways(
        ds,
        elfs.compute_pseudo_labels,
        "compute_pseudo_labels",
        dict(key="c", n_clusters=n_clusters, clustering="kmeans", embeddings_field="flat"),
        rf"'flat'.*{match}.*Fix:.*encoder",
    )
    before = snapshot(ds)
    with pytest.raises(ElfsInputError, match=rf"'flat'.*{match}"):
        elfs.run_pipeline(
            ds, key="c", budget_count=5, n_clusters=n_clusters, clustering="kmeans",
            embeddings_field="flat", visualize=False,
        )  # fmt: skip
    assert snapshot(ds) == before


def test_a_scalar_field_is_refused_as_not_a_vector_field(ds):
    """Finding 3 (and 8b): a FloatField was clustered as 1-d "vectors"; 'id' was said to have no
    value on any sample."""
    _set_vectors(ds, "brightness", [float(i) for i in range(len(ds))])
    for field, kind in (("brightness", "FloatField"), ("id", "ObjectIdField")):
        _refused_both_ways(
            ds,
            elfs.compute_pseudo_labels,
            "compute_pseudo_labels",
            dict(key="s", n_clusters=3, clustering="kmeans", embeddings_field=field),
            rf"'{field}' is an? {kind}.*not a vector field.*Fix: pass a vector field",
        )


def test_image_size_has_an_upper_bound(ds, tmp_path, monkeypatch):
    """Finding 5: image_size=100000 ended in a raw allocation error (numpy or torch)."""
    monkeypatch.setenv("ELFS_CACHE_DIR", str(tmp_path))
    _refused_both_ways(
        ds,
        elfs.compute_embeddings,
        "compute_embeddings",
        dict(key="big", image_size=100_000),
        r"image_size must be an integer in \[32, 2048\].*got 100000.*Fix:",
    )
    _refused_both_ways(
        ds,
        elfs.compute_contrastive_scores,
        "compute_contrastive_scores",
        dict(key="big", image_size=100_000, epochs=1),
        r"image_size must be an integer in \[8, 1024\].*Fix:",
    )


def test_huge_finite_embeddings_are_refused_naming_the_field(ds):
    """Finding 6: values near 1e20 (their squares overflow float32) passed the NaN/inf check;
    the plot died in numpy and k-means put every sample in one cluster."""
    rng = np.random.default_rng(0)
    _set_vectors(ds, "huge", [(rng.normal(size=32) * 1e20).astype(np.float32) for _ in ds])
    match = r"embeddings in 'huge' have values of magnitude above 1e\+15.*Fix:"
    _refused_both_ways(
        ds,
        elfs.compute_pseudo_labels,
        "compute_pseudo_labels",
        dict(key="h", n_clusters=4, clustering="kmeans", embeddings_field="huge"),
        match,
    )
    _refused_both_ways(
        ds,
        elfs.compute_visualization,
        "compute_visualization",
        dict(key="h", embeddings_field="huge"),
        match,
    )


def test_the_cnn_proxy_skips_and_lists_images_unreadable_since_embedding(ds, tmp_path, monkeypatch):
    """Finding 7: an image deleted after its embedding made the CNN proxy refuse the whole run,
    saying their embeddings were skipped too (they were not). It now skips and lists them, as
    the contrastive stage does; with fewer than 2 readable the refusal says what is true."""
    monkeypatch.setenv("ELFS_CACHE_DIR", str(tmp_path / "cache"))
    gone = ds.take(1, seed=1).values("id")[0]
    ds.set_values("filepath", {gone: str(tmp_path / "deleted.jpg")}, key_field="id")
    cnn = dict(key=KEY, proxy="cnn", epochs=1, num_workers=0,
               cnn_params={"width": 4, "image_size": 16})  # fmt: skip
    report = elfs.compute_difficulty(ds, **cnn)
    assert report["n_skipped"] == 1 and report["n_samples"] == len(ds) - 1
    assert [s["id"] for s in report["skipped"]] == [gone]
    assert set(ds.exists(f"{KEY}_aum", False).values("id")) == {gone}
    assert ds.load_run_results(f"{KEY}_difficulty").n_skipped == 1

    keep = ds.take(1, seed=2).values("id")[0]
    moved = {i: str(tmp_path / f"moved-{i}.jpg") for i in ds.values("id") if i != keep}
    ds.set_values("filepath", moved, key_field="id")
    before = snapshot(ds)
    with pytest.raises(ElfsInputError) as refused:
        elfs.compute_difficulty(ds, **cnn)
    text = str(refused.value)
    assert "could be read" in text and "Fix:" in text and "moved-" in text
    assert "embeddings were skipped" not in text
    assert snapshot(ds) == before


def test_too_few_samples_to_cluster_says_two_are_needed(ds):
    """Finding 8a: a 1-sample view with n_clusters=2 said "Fix: pass n_clusters <= 1"."""
    one = ds.limit(1)
    before = snapshot(ds)
    with pytest.raises(ElfsInputError, match=r"at least 2 samples.*Fix:") as api:
        elfs.compute_pseudo_labels(
            one, key="a", n_clusters=2, clustering="kmeans", embeddings_field="elfs_embedding"
        )
    assert "n_clusters <= 1" not in str(api.value)
    shown = _operator_error(
        "compute_pseudo_labels", one, key="a", n_clusters=2, clustering="kmeans",
        embeddings_field="elfs_embedding",
    )  # fmt: skip
    assert str(shown) == str(api.value)
    assert snapshot(ds) == before


def test_empty_vectors_are_refused_naming_the_field_and_a_fix(ds):
    """Finding 8c: zero-length vectors said "X is empty (shape (40, 0)); pass at least one
    sample and feature", naming an internal variable and no fix."""
    _set_vectors(ds, "emb0", [np.zeros(0, np.float32)] * len(ds))
    match = r"'emb0' are empty \(0 values each\).*Fix:"
    _refused_both_ways(
        ds,
        elfs.compute_pseudo_labels,
        "compute_pseudo_labels",
        dict(key="e", n_clusters=2, clustering="kmeans", embeddings_field="emb0"),
        match,
    )
    _refused_both_ways(
        ds,
        elfs.compute_visualization,
        "compute_visualization",
        dict(key="e", embeddings_field="emb0"),
        match,
    )


@pytest.mark.parametrize(
    "function, operator, kwargs, match",
    [
        (elfs.select_coreset, "select_coreset", dict(budget_count=1, tag=""), "tag must be"),
        (elfs.compute_difficulty, "compute_difficulty", dict(epochs=0), "epochs must be"),
        (
            elfs.compute_pseudo_labels,
            "compute_pseudo_labels",
            dict(n_clusters=4, embeddings_field="elfs_embedding", temi_params={"epochs": -1}),
            r"temi_params\['epochs'\] must be",
        ),
        (
            elfs.compute_contrastive_scores,
            "compute_contrastive_scores",
            dict(batch_size=1),
            "batch_size must be",
        ),
        (
            elfs.compute_contrastive_scores,
            "compute_contrastive_scores",
            dict(image_size=1),
            "image_size must be",
        ),
        (elfs.compute_embeddings, "compute_embeddings", dict(num_workers=-1), "num_workers must"),
        (elfs.compute_embeddings, "compute_embeddings", dict(overwrite="yes"), "overwrite must"),
    ],
    ids=["tag", "epochs", "temi_params", "batch_size", "image_size", "num_workers", "overwrite"],
)
def test_range_messages_name_a_fix(ds, function, operator, kwargs, match):
    """Finding 8d: these named the problem but no fix."""
    _refused_both_ways(ds, function, operator, dict(key=KEY, **kwargs), rf"{match}.*Fix: ")


# --------------------------------------------------------------------------- checked up front


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mode="typical", beta=0.2), r"beta=0.2 sets a hard-end cut.*'typical' makes no cut"),
        (dict(model="timm:no_such_model_xyz"), r"timm has no model named 'no_such_model_xyz'"),
        # timm's own table says so, without a download: the form marked neither (audit
        # 'typicalonly' #6), and the tag ended in a RuntimeError traceback
        (dict(model="timm:nf_resnet26"), r"'nf_resnet26' has no pretrained weights"),
        (dict(model="timm:resnet18.no_such_tag"), r"Invalid pretrained tag.*list_pretrained"),
        # recorded as given, the same encoder read as another one: its vectors as recomputed
        (dict(model="efficientnet-lite0 "), r"spaces around it. Fix: model='efficientnet-lite0'"),
    ],
)
def test_pipeline_arguments_that_can_never_run_are_refused_before_the_embeddings(ds, kwargs, match):
    """The mode/beta pair and the encoder's name were refused only once the embeddings had
    been computed and written (and the models trained, for the pair)."""
    _refused_both_ways(
        ds,
        elfs.run_pipeline,
        "run_elfs_pipeline",
        dict(key="fresh", budget_count=5, n_clusters=3, clustering="kmeans", **kwargs),
        match,
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_clusters=1000), r"n_clusters=1000 is larger than the 40 samples"),
        (dict(mode="typical", beta=0.2), "'typical' makes no cut"),
        (dict(model="timm:no_such_model_xyz"), "timm has no model"),
        (dict(key="mine"), "mine_aum"),
    ],
)
def test_a_sharded_run_is_refused_when_queued_not_by_its_last_worker(ds, kwargs, match):
    """`queue_sharded_pipeline` checks the pipeline's arguments against the data now; they
    were refused by the last worker, after every shard had embedded."""
    import fiftyone as fo
    from fiftyone.operators.delegated import DelegatedOperationService

    ds.add_sample_field("mine_aum", fo.FloatField)  # the user's field, as key 'mine' would write
    before = snapshot(ds)
    with pytest.raises(ElfsInputError, match=match):
        queue_sharded_pipeline(ds, 2, **{"key": "sh", "budget_count": 5, "n_clusters": 3, **kwargs})
    assert snapshot(ds) == before
    assert DelegatedOperationService().list_operations(dataset_name=ds.name) == []


@pytest.mark.parametrize(
    "function, operator",
    [("compute_difficulty", "compute_difficulty"), ("select_more", "select_more")],
)
def test_a_label_field_holding_no_labels_is_refused(ds, function, operator):
    """An empty Classification field (the answers loaded into another field, or not yet) was
    taken as "labels + clusters" with 0 labels, without a word."""
    import fiftyone as fo

    ds.add_sample_field("human", fo.EmbeddedDocumentField, embedded_doc_type=fo.Classification)
    kwargs = dict(key=KEY, label_field="human")
    if function == "select_more":
        kwargs["budget_count"] = 3
    else:
        kwargs["embeddings_field"] = "elfs_embedding"
    _refused_both_ways(
        ds, getattr(elfs, function), operator, kwargs, r"'human' holds no labels.*Fix: load"
    )


@pytest.mark.parametrize(
    "function, operator",
    [("compute_difficulty", "compute_difficulty"), ("select_more", "select_more")],
)
def test_a_field_elfs_wrote_is_refused_as_the_annotators_labels(ds, function, operator):
    """The key's own pseudo-labels were taken as annotator labels: the proxy learned them as
    truth, the stale-score refusal was off after new pseudo-labels, and mode 'auto' switched to
    the window (selection audit)."""
    kwargs = dict(key=KEY, label_field=f"{KEY}_pseudo_label")
    if function == "select_more":
        kwargs["budget_count"] = 3
    else:
        kwargs["embeddings_field"] = "elfs_embedding"
    _refused_both_ways(
        ds,
        getattr(elfs, function),
        operator,
        kwargs,
        rf"label_field '{KEY}_pseudo_label' is written by the 'pseudo_labels' stage of ELFS key "
        rf"'{KEY}'.*Fix: pass the field of your annotators' labels",
    )


@pytest.mark.parametrize(
    "key, existing, whose",
    [
        ("K", "k-coreset", "the coreset view of ELFS key 'k'"),  # the scored key's own view
        ("my_set", "my set-coreset", "a saved view of yours"),
        ("中文", "日本語-coreset", "a saved view of yours"),  # both slugs are 'coreset'
    ],
)
def test_a_key_whose_view_would_replace_another_view_by_its_slug_is_refused(
    ds, key, existing, whose
):
    """FiftyOne replaces a saved view of the same slug: key 'K' silently replaced key 'k''s
    coreset view, key 'my_set' the user's 'my set-coreset'."""
    if not ds.has_saved_view(existing):
        ds.save_view(existing, ds.limit(3))
    _refused_both_ways(
        ds,
        elfs.run_pipeline,
        "run_elfs_pipeline",
        dict(
            key=key,
            budget_count=5,
            n_clusters=3,
            clustering="kmeans",
            embeddings_field="elfs_embedding",
            visualize=False,
        ),
        rf"would replace '{existing}', {whose}",
    )
    assert existing in ds.list_saved_views()


def test_a_dotted_embeddings_field_is_refused_before_any_image_is_embedded(ds, monkeypatch):
    """'emb.vec' embedded every image, then failed with FiftyOne's raw ValueError at the write."""
    from fiftyone_elfs.embeddings import encoders

    def never(self, batch):
        raise AssertionError("an image was embedded")

    monkeypatch.setattr(encoders.ImageEncoder, "embed_batch", never)
    _refused_both_ways(
        ds,
        elfs.compute_embeddings,
        "compute_embeddings",
        dict(key="d", embeddings_field="emb.vec"),
        r"'emb.vec' is a path inside the field 'emb'.*Fix: name one without dots, e.g. 'emb_vec'",
    )


@pytest.mark.parametrize("function", [elfs.run_pipeline, elfs.compute_difficulty])
def test_cnn_settings_with_the_mlp_proxy_are_refused(ds, function):
    """They were ignored without a word (the App form hides them unless proxy='cnn', and its
    operators pass hidden fields as unset)."""
    before = snapshot(ds)
    budget = {"budget_count": 5} if function is elfs.run_pipeline else {}
    with pytest.raises(ElfsInputError, match=r"cnn_params \['lr'\] were given with proxy='mlp'"):
        function(ds, key=KEY, cnn_params={"lr": 0.01}, embeddings_field="elfs_embedding", **budget)
    assert snapshot(ds) == before


def test_samples_outside_the_scored_view_are_named_as_such(ds):
    """Scores computed on a view, selection on the dataset: the notice blamed samples added
    since or unreadable images (neither was the case) and said to rerun everything."""
    elfs.compute_difficulty(
        ds.take(20, seed=0), key=KEY, embeddings_field="elfs_embedding", epochs=1
    )
    result = elfs.select_coreset(ds, key=KEY, budget_count=5)
    [notice] = [n for n in result.notices if "have no 'aum' score" in n]
    assert notice.startswith(f"{len(ds) - 20} of the {len(ds)} samples have no 'aum' score")
    assert "the scores were computed on a view without them" in notice
    assert "on all the samples to select from" in notice


def test_difficulty_on_a_view_of_one_cluster_names_the_view(ds):
    """It said to recompute the pseudo-labels with n_clusters >= 2, which they had."""
    from fiftyone import ViewField as F

    label = ds.first()[f"{KEY}_pseudo_label"].label
    one = ds.match(F(f"{KEY}_pseudo_label.label") == label)
    before = snapshot(ds)
    with pytest.raises(ElfsInputError, match=r"fewer than 2 clusters.*a view of one cluster"):
        elfs.compute_difficulty(one, key=KEY, embeddings_field="elfs_embedding", epochs=1)
    assert snapshot(ds) == before


@pytest.mark.parametrize(
    "function, operator, kwargs",
    [
        (elfs.run_pipeline, "run_elfs_pipeline", dict(key="n", budget_count=5, n_clusters=3)),
        (elfs.compute_embeddings, "compute_embeddings", dict(key="n")),
        (elfs.select_coreset, "select_coreset", dict(key=KEY, budget_count=5)),
        (elfs.compute_visualization, "compute_visualization", dict(key=KEY)),
    ],
)
def test_a_view_listing_samples_twice_is_refused_before_anything_changes(
    ds, function, operator, kwargs
):
    """A concat of overlapping views failed with pymongo's BulkWriteError after the work (every
    image embedded first), and the plot stored a point per entry, so some samples twice."""
    twice = ds.limit(20).concat(ds.skip(10).limit(20))  # samples 10-19 listed twice
    before = snapshot(ds)
    match = r"lists 40 entries for 30 distinct samples.*Fix: .*select\(view.distinct\('id'\)\)"
    with pytest.raises(ElfsInputError, match=match):
        function(twice, **kwargs)
    shown = _operator_error(operator, twice, **kwargs)
    assert re.search(match, str(shown)), shown
    assert snapshot(ds) == before
    once = ds.limit(20).concat(ds.skip(20).limit(10))  # no overlap: accepted
    assert len(elfs.select_coreset(once, key=KEY, budget_count=5).selected_ids) == 5


def test_a_misspelt_or_positional_option_names_the_function_and_its_parameters(ds):
    # "got an unexpected keyword argument 'budgt'" named neither the function nor the
    # parameters, and "too many positional arguments" did not say the options are keyword-only.
    before = snapshot(ds)
    with pytest.raises(TypeError) as misspelt:
        elfs.select_coreset(ds, key=KEY, budgt=3)
    text = str(misspelt.value)
    assert text.startswith("select_coreset(): ") and "did you mean 'budget_count'?" in text
    assert "by keyword only: budget_count, budget_fraction" in text
    with pytest.raises(TypeError, match=r"select_coreset\(\): too many positional .* by "):
        elfs.select_coreset(ds, 0.1)
    assert snapshot(ds) == before


@pytest.mark.parametrize("progress", ["bar", True, 3])
def test_a_progress_that_is_no_function_is_refused_before_anything_runs(ds, progress):
    # It failed with "'str' object is not callable" from inside a stage.
    before = snapshot(ds)
    with pytest.raises(ElfsInputError, match="progress must be a function") as refused:
        elfs.compute_pseudo_labels(ds, key=KEY, n_clusters=3, progress=progress)
    assert refused.value.param == "progress" and "Fix:" in str(refused.value)
    assert snapshot(ds) == before


def test_a_mistyped_key_is_named_as_such_with_the_keys_that_exist(ds):
    # "No 'aum' scores for key 'kk' ... Fix: run compute_difficulty" (a proxy to train for a
    # typo), and param was None where the App's check of the same call said 'key'.
    with pytest.raises(ElfsInputError) as refused:
        elfs.select_coreset(ds, key=KEY + "x", budget_count=3)
    assert "the dataset has no ELFS run with that key" in str(refused.value)
    assert f"Fix: use one of its keys ['{KEY}']" in str(refused.value)
    assert refused.value.param == "key"
