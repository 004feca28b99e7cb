"""Sharded embeddings (issue 16 item 4): delegated workers embed shards in parallel, the last
shard queues the rest of the pipeline, and the result equals a single-process run.

Two worker processes run FiftyOne's delegated-operation service
(``DelegatedOperationService().execute_queued_operations``, what ``fiftyone delegated launch``
runs) against the private test database, finding the plugin through FIFTYONE_PLUGINS_DIR and the
database through FIFTYONE_DATABASE_URI, as workers on other machines would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import fiftyone as fo
import fiftyone.operators as foo
import numpy as np
import pytest
from fiftyone.operators.delegated import DelegatedOperationService

import fiftyone_elfs as elfs
from fiftyone_elfs import dataset_io, embedding_chunks, sharding
from fiftyone_elfs.plugin.operators import queue_sharded_pipeline

N = 16
KEY = "sh"
PIPELINE = dict(key=KEY, budget_count=6, n_clusters=3, clustering="kmeans", epochs=2,
                visualize=False)  # fmt: skip

WORKER = r"""
import json, os, sys, time
from fiftyone.operators.delegated import DelegatedOperationService

name = sys.argv[1]
service = DelegatedOperationService()
ran = []
deadline = time.time() + 500
while time.time() < deadline:  # what `fiftyone delegated launch` does, until the queue is empty
    done = [r for r in service.execute_queued_operations(dataset_name=name, limit=1) if r]
    for result in done:
        ran.append(result.error)
        if result.error:
            print(result.error, file=sys.stderr)
    queued = service.get_queued_operations(dataset_name=name)
    if not done and not queued and not service.get_running_operations(dataset_name=name):
        break
    if not done:
        time.sleep(0.3)
print("RAN " + json.dumps({"pid": os.getpid(), "errors": ran}))
"""


@pytest.fixture
def images(base_dataset, monkeypatch):
    monkeypatch.setenv(embedding_chunks.CHUNK_ENV, "4")
    ds = base_dataset.take(N, seed=5).clone()
    ds.delete_sample_field("elfs_embedding")
    yield ds
    ds.delete()


def test_shard_bounds_cover_every_item_once():
    for n in (0, 1, 7, 24, 1_281_167):
        for n_shards in (1, 2, 3, 8):
            bounds = [sharding.shard_bounds(n, i, n_shards) for i in range(n_shards)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    with pytest.raises(elfs.ElfsInputError, match="shard must be in 0 .. n_shards - 1"):
        sharding.shard_bounds(10, 3, 3)


def test_exactly_one_shard_is_last_whatever_the_order_and_reruns(images):
    ds_id = dataset_io.dataset_id(images)
    sharding.plan(ds_id, "order", 3, {})
    calls = [(2, 3), (0, 3), (2, 3), (1, 3), (1, 3), (0, 3)]
    assert [sharding.mark_done(ds_id, "order", s, n) for s, n in calls] == [
        False, False, False, True, False, False,
    ]  # fmt: skip
    sharding.clear(ds_id, "order")


def test_two_delegated_workers_embed_the_shards_then_one_runs_the_pipeline(images, tmp_path):
    reference = images.clone()
    try:
        elfs.run_pipeline(reference, **PIPELINE)
        want_vectors = dict(zip(*reference.values(["filepath", f"{KEY}_embedding"]), strict=True))
        want_coreset = sorted(reference.match_tags(f"{KEY}_coreset").values("filepath"))
    finally:
        reference.delete()

    queued = queue_sharded_pipeline(images, 2, **PIPELINE)
    assert len(queued) == 2 and len(DelegatedOperationService().get_queued_operations(
        dataset_name=images.name)) == 2  # fmt: skip
    env = dict(os.environ)  # FIFTYONE_DATABASE_URI and FIFTYONE_PLUGINS_DIR of the tests
    assert env.get("FIFTYONE_PLUGINS_DIR") and env.get("FIFTYONE_DATABASE_URI", "x")
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, images.name],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    ran = []
    for worker in workers:
        out, err = worker.communicate(timeout=560)
        assert worker.returncode == 0, err[-3000:]
        line = next(line for line in out.splitlines() if line.startswith("RAN "))
        ran.append(json.loads(line[4:]))
    assert not [e for r in ran for e in r["errors"] if e], ran
    print("operations run per worker:", [len(r["errors"]) for r in ran])
    ops = DelegatedOperationService().list_operations(dataset_name=images.name)
    assert sorted(op.operator.rsplit("/", 1)[1] for op in ops) == [
        "embed_shard",
        "embed_shard",
        "run_elfs_pipeline",
    ]  # fmt: skip  (the pipeline queued once, by the last shard)
    assert {op.run_state for op in ops} == {"completed"}

    images.reload()
    got = dict(zip(*images.values(["filepath", f"{KEY}_embedding"]), strict=True))
    assert got.keys() == want_vectors.keys()
    for path, vector in want_vectors.items():
        # float32 rounding only: a shard's batches group other images than one process's, and
        # the channels-last convolutions round by batch (seen: 1.0e-5 at a value of 2.82)
        np.testing.assert_allclose(got[path], vector, rtol=1e-5, atol=1e-5)
    assert sorted(images.match_tags(f"{KEY}_coreset").values("filepath")) == want_coreset
    results = images.load_run_results(f"{KEY}_embeddings", load_view=False)
    assert results.n_resumed == N  # the pipeline embedded nothing itself
    assert embedding_chunks.count(dataset_io.dataset_id(images), KEY) == 0
    assert sharding.planned_pipeline(dataset_io.dataset_id(images), KEY) is None
    assert foo.get_operator("@fiftyone-elfs/elfs/embed_shard") is not None


def test_a_last_shard_whose_queueing_failed_queues_the_rest_when_rerun(images):
    """Audit 'workers' #1: the last shard's queueing of the pipeline was refused (a field of
    the key's names made since the plan); after the fix, rerunning that shard 'completed' and
    queued nothing: it was no longer the one that completed the set, and the run stalled."""
    from fiftyone_elfs.plugin.operators import _embed_shard_then_queue_the_rest as run_shard

    queue_sharded_pipeline(images, 2, key=KEY, budget_count=4, n_clusters=2, visualize=False)
    service = DelegatedOperationService()
    for op in service.get_queued_operations(dataset_name=images.name):
        service.delete_operation(op.id)  # the shards are run here, one after the other
    images.add_sample_field(f"{KEY}_aum", fo.FloatField)  # the user's, made since the plan
    assert run_shard(images, 0, 2, key=KEY)["last"] is False
    with pytest.raises(elfs.ElfsInputError, match=r"already exists.*rerun this shard"):
        run_shard(images, 1, 2, key=KEY)
    assert not service.get_queued_operations(dataset_name=images.name)
    images.delete_sample_field(f"{KEY}_aum")  # the fix the message names
    again = run_shard(images, 1, 2, key=KEY)
    assert again["last"] and again["queued"] == "run_elfs_pipeline" and again["n_resumed"] > 0
    (queued,) = service.get_queued_operations(dataset_name=images.name)
    assert queued.operator.endswith("/run_elfs_pipeline")
    assert run_shard(images, 0, 2, key=KEY).get("queued") is None  # queued exactly once
    service.delete_operation(queued.id)
    sharding.clear(dataset_io.dataset_id(images), KEY)


def test_shards_queued_on_their_own_end_with_the_field_written(images):
    """Audit 'operators' #3: embed_shard used as its usage line shows (no planned pipeline):
    the last shard queued the pipeline without arguments, which failed with "No budget given",
    and the field was never written. Now it queues compute_embeddings (one worker here)."""
    operator = foo.get_operator("@fiftyone-elfs/elfs/embed_shard")
    for shard in range(2):
        operator(images, shard, 2, key=KEY, delegate=True)
    worker = subprocess.run(
        [sys.executable, "-c", WORKER, images.name],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=560,
    )
    assert worker.returncode == 0, worker.stderr[-3000:]
    ran = json.loads(next(x for x in worker.stdout.splitlines() if x.startswith("RAN "))[4:])
    assert ran["errors"] == [None, None, None], worker.stderr[-3000:]
    ops = DelegatedOperationService().list_operations(dataset_name=images.name)
    names = sorted(op.operator.rsplit("/", 1)[1] for op in ops)
    assert names == ["compute_embeddings", "embed_shard", "embed_shard"]
    images.reload()
    assert images.count(f"{KEY}_embedding") == N
    results = images.load_run_results(f"{KEY}_embeddings", load_view=False)
    assert results.n_resumed == N  # written from the shards' chunks, nothing embedded again


def test_a_resumed_shard_reads_no_vector_back_and_counts_what_was_stored(images, monkeypatch):
    """A shard worker only needs to know which images are done: resuming must not load the
    stored vectors (at 1.28M a shard's vectors are gigabytes), and must embed only the rest."""
    ds_id, key = dataset_io.dataset_id(images), "resume"

    class Stop(Exception):
        pass

    def stop_after_two_chunks(fraction: float, label: str) -> None:
        if embedding_chunks.count(ds_id, key) >= 2:
            raise Stop

    with pytest.raises(Stop):
        elfs.embed_shard(images, 0, 1, key=key, batch_size=4, image_size=32,
                         progress=stop_after_two_chunks)  # fmt: skip
    # Chunks are stored by a writer thread while the next one is embedded, so the stop can land
    # after the second or the third store; what counts is that the resume starts from there.
    stored = embedding_chunks.count(ds_id, key)
    assert 2 <= stored < -(-N // 4)
    run = embedding_chunks.run_name(
        ds_id, key, embedding_chunks.signature("efficientnet-lite0", 32)
    )
    vectors, failures = embedding_chunks.load(run)
    done, stored_failures = embedding_chunks.stored_ids(run)
    assert done == set(vectors) and len(done) == 4 * stored and stored_failures == failures == {}

    def no_vectors(run):
        raise AssertionError("a shard worker read the stored vectors back")

    monkeypatch.setattr(embedding_chunks, "load", no_vectors)
    try:
        result = elfs.embed_shard(images, 0, 1, key=key, batch_size=4, image_size=32)
        assert result["n_resumed"] == 4 * stored and result["n_computed"] == N - 4 * stored
        assert result["last"]
        assert embedding_chunks.count(ds_id, key) == -(-N // 4)  # every image now stored
    finally:
        embedding_chunks.clear(ds_id, key)
        sharding.clear(ds_id, key)


def test_the_planned_pipeline_is_stored_as_checked_plain_values(images):
    # numpy scalars pass the library's checks; the plan must hold what MongoDB can store, and a
    # deprecated keyword is stored under its current name, as run_pipeline itself would take it.
    with pytest.warns(DeprecationWarning, match="proxy_epochs"):
        queued = queue_sharded_pipeline(
            images, 2, key=KEY, budget_fraction=np.float32(0.25), n_clusters=np.int64(3),
            proxy_epochs=2, visualize=False,
        )  # fmt: skip
    assert len(queued) == 2
    planned = sharding.planned_pipeline(dataset_io.dataset_id(images), KEY)
    assert planned == dict(key=KEY, budget_fraction=0.25, n_clusters=3, epochs=2, visualize=False)
    assert type(planned["budget_fraction"]) is float and type(planned["n_clusters"]) is int
    service = DelegatedOperationService()  # the two queued shards are not run here
    for op in service.get_queued_operations(dataset_name=images.name):
        service.delete_operation(op.id)


def test_a_shard_counts_each_image_once_computed_resumed_or_skipped(images, tmp_path):
    """n_computed + n_resumed + n_skipped is the shard's n_samples: an unreadable image is
    skipped, not counted as embedded, and a rerun counts the stored ones as resumed."""
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    sample = images.first()
    sample.filepath = str(broken)
    sample.save()
    ds_id, key = dataset_io.dataset_id(images), "counts"
    try:
        first = elfs.embed_shard(images, 0, 1, key=key, batch_size=4, image_size=32)
        assert (first["n_samples"], first["n_computed"], first["n_skipped"]) == (N, N - 1, 1)
        assert first["n_resumed"] == 0
        again = elfs.embed_shard(images, 0, 1, key=key, batch_size=4, image_size=32)
        # the unreadable image is tried again (a file may be back); the rest are stored
        assert (again["n_computed"], again["n_resumed"], again["n_skipped"]) == (0, N - 1, 1)
    finally:
        embedding_chunks.clear(ds_id, key)
        sharding.clear(ds_id, key)
