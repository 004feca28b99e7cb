"""Pool adaptation (issue 13's lever): the offline encoder's last stages fine-tuned on the pool.

The algorithm on small synthetic image tensors (what it trains, what it keeps, determinism,
refusals); then the embedding stage with ``adapt_steps`` on real images in the real database,
through the API, the operator and the shards: the weights are trained once per key, kept in the
database, reused for images added later and by every shard, replaced with the settings and
removed with the key. Two optimiser steps everywhere: the tests check the mechanics, the
benchmark (`benchmarks/adapted_encoder.py`) what adaptation is worth.
"""

from __future__ import annotations

import fiftyone.operators as foo
import numpy as np
import pytest
import torch

import fiftyone_elfs as elfs
from fiftyone_elfs import adapted_weights, dataset_io, param_rows
from fiftyone_elfs.embeddings import efficientnet_lite, encoders, pool_adaptation
from fiftyone_elfs.errors import ElfsInputError

SIZE = 64  # px: the network takes any size; small is fast


def _pool(n: int, seed: int = 0) -> torch.Tensor:
    """n smooth random images in [0, 1] (blobs of colour, so crops differ from one another)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 8, 8, generator=g)
    return torch.nn.functional.interpolate(coarse, size=SIZE, mode="bilinear").clamp(0, 1)


def _adapt(pool: torch.Tensor, seed: int = 0, steps: int = 2, reader=None):
    net = efficientnet_lite.load_efficientnet_lite("lite0")
    read = reader or (lambda idx: pool[torch.from_numpy(idx)])
    weights = pool_adaptation.adapt_network(net, read, len(pool), steps, seed, batch_size=6)
    return net, weights


def test_adaptation_trains_only_the_last_stages_and_keeps_every_batch_norm_statistic():
    before = efficientnet_lite.load_efficientnet_lite("lite0").state_dict()
    net, weights = _adapt(_pool(12))
    after = net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "two optimiser steps changed nothing"
    trained = ("blocks.5.", "blocks.6.", "conv_head.")
    assert all(k.startswith(trained) for k in changed), sorted(changed)[:5]
    assert any(k.startswith("blocks.5.") for k in changed)
    assert any(k.startswith("conv_head.") for k in changed)
    assert not any("running_" in k for k in changed)  # ImageNet statistics kept
    assert set(weights) == {k for k in after if k.startswith(trained)}
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    # it trains channels-last (faster on a CPU) and hands back the usual layout
    assert all(t.is_contiguous() for t in [*after.values(), *weights.values()])


def test_same_pool_and_seed_give_the_same_weights_another_seed_others():
    pool = _pool(12)
    digest = pool_adaptation.weights_digest
    first, again = digest(_adapt(pool)[1]), digest(_adapt(pool)[1])
    assert first == again
    assert digest(_adapt(pool, seed=1)[1]) != first


@pytest.mark.parametrize("stop_after", [1, 2, 3])  # mid-pass, at a pass's end, in the 2nd pass
def test_training_resumed_from_a_checkpoint_ends_with_the_uninterrupted_weights(stop_after):
    pool = _pool(12)  # batches of 6: two steps a pass
    states = []
    net = efficientnet_lite.load_efficientnet_lite("lite0")
    read = lambda idx: pool[torch.from_numpy(idx)]  # noqa: E731
    whole = pool_adaptation.adapt_network(
        net, read, 12, 4, batch_size=6, on_checkpoint=states.append, checkpoint_seconds=0
    )
    assert [s["step"] for s in states] == [1, 2, 3]  # none after the last step
    state = pool_adaptation.weights_from_bytes(
        pool_adaptation.weights_to_bytes(states[stop_after - 1])
    )
    again = efficientnet_lite.load_efficientnet_lite("lite0")
    resumed = pool_adaptation.adapt_network(again, read, 12, 4, batch_size=6, resume=state)
    digest = pool_adaptation.weights_digest
    assert digest(resumed) == digest(whole)
    assert digest(states[0]["net"]) != digest(whole)  # the checkpoints are copies, not views


def test_weights_round_trip_and_change_the_encoders_features(image_dir):
    _, weights = _adapt(_pool(12))
    data = pool_adaptation.weights_to_bytes(weights)
    loaded = pool_adaptation.weights_from_bytes(data)
    assert pool_adaptation.weights_digest(loaded) == pool_adaptation.weights_digest(weights)
    shipped = encoders.load_encoder("efficientnet-lite0", image_size=SIZE)
    adapted = encoders.load_encoder("efficientnet-lite0", image_size=SIZE, adapted_weights=loaded)
    assert "adapted" not in shipped.config
    assert adapted.config["adapted"] == pool_adaptation.weights_digest(weights)
    batch = torch.rand(4, 3, SIZE, SIZE) * 2 - 1
    a, b = shipped.embed_batch(batch), adapted.embed_batch(batch)
    assert a.shape == b.shape and not np.allclose(a, b, atol=1e-4)
    # folded batch norms: the encoder computes what the trained (unfolded) network computes
    net = efficientnet_lite.load_efficientnet_lite("lite0")
    pool_adaptation.apply_adapted_weights(net, loaded)
    with torch.no_grad():
        unfolded = net.forward_head(net.forward_features(batch), pre_logits=True).numpy()
    np.testing.assert_allclose(b, unfolded, rtol=1e-3, atol=1e-4)


def test_weights_of_another_network_are_refused():
    _, weights = _adapt(_pool(12))
    lite2 = efficientnet_lite.build_efficientnet_lite("lite2").eval()
    with pytest.raises(ValueError, match="do not fit"):
        pool_adaptation.apply_adapted_weights(lite2, weights)


def test_a_pool_without_two_readable_images_is_refused_with_the_fix():
    with pytest.raises(ElfsInputError, match="at least 2 images"):
        _adapt(_pool(1))
    unreadable = lambda idx: torch.empty(0, 3, SIZE, SIZE)  # noqa: E731 - every file broken
    with pytest.raises(ElfsInputError, match="0 of the 12 could be read.*adapt_steps=0"):
        _adapt(_pool(12), reader=unreadable)


def test_a_pool_whose_batches_never_hold_two_readable_images_is_refused_not_looped():
    pool = _pool(12)
    one_per_batch = lambda idx: pool[torch.from_numpy(idx[:1])]  # noqa: E731
    with pytest.raises(ElfsInputError, match="batches of at least 2 readable images; 2 of"):
        _adapt(pool, reader=one_per_batch)


def test_unreadable_images_are_left_out_of_the_batches():
    pool = _pool(12)
    seen = []

    def half_readable(idx):  # even indices unreadable
        kept = [i for i in idx if i % 2]
        seen.append(len(kept))
        return pool[torch.tensor(kept, dtype=torch.long)]

    _adapt(pool, reader=half_readable)
    assert seen and all(n < 6 for n in seen)


def test_the_option_is_off_by_default_and_suggested_at_the_measured_steps():
    assert param_rows.ADAPT_STEPS.default == 0
    assert pool_adaptation.SUGGESTED_STEPS == 300
    assert "300" in param_rows.ADAPT_STEPS.help and "min" in param_rows.ADAPT_STEPS.help


# --------------------------------------------------------------------------- FiftyOne layer

KEY = "adapted"
FIELD = f"{KEY}_embedding"
ADAPT = dict(key=KEY, adapt_steps=2, batch_size=16)


def _stored(dataset, key: str = KEY) -> int:
    owner = f"{dataset_io.dataset_id(dataset)}:{key}"
    return adapted_weights._db()[adapted_weights.COLLECTION].count_documents({"owner": owner})


@pytest.fixture
def small(dataset):
    """30 real images of the test dataset (a clone: the key's weights are removed with it)."""
    view = dataset.take(30, seed=5)
    yield dataset, view
    elfs.delete_key(dataset, KEY)


def test_adapted_embeddings_are_recorded_kept_reused_replaced_and_deleted(small):
    dataset, view = small
    first = elfs.compute_embeddings(view, **ADAPT)
    assert first["n_computed"] == 30
    info = first["adaptation"]
    assert info["steps"] == 2 and info["seed"] == 0 and info["digest"] and info["seconds"] > 0
    assert _stored(dataset) == 1
    config = dataset.get_run_info(f"{KEY}_embeddings").config
    assert config.adapt_steps == 2 and config.adapt_seed == 0
    shipped = dict(zip(*view.values(["id", "elfs_embedding"]), strict=True))
    vectors = dict(zip(*view.values(["id", FIELD]), strict=True))
    assert not np.allclose(np.stack(list(vectors.values())), np.stack(list(shipped.values())))

    # ten more images: only they are embedded, with the stored weights (not trained again)
    wider = dataset.select([*view.values("id"), *dataset.exclude(view).take(10).values("id")])
    again = elfs.compute_embeddings(wider, **ADAPT)
    assert (again["n_computed"], again["n_reused"]) == (10, 30)
    assert again["adaptation"]["digest"] == info["digest"] and _stored(dataset) == 1
    kept = dict(zip(*view.values(["id", FIELD]), strict=True))
    assert all(np.array_equal(kept[i], vectors[i]) for i in vectors)
    stored, _ = adapted_weights.load(
        adapted_weights.name(dataset_io.dataset_id(dataset), KEY, "efficientnet-lite0", 128, 2, 0)
    )
    encoder = encoders.load_encoder(
        "efficientnet-lite0", adapted_weights=pool_adaptation.weights_from_bytes(stored)
    )
    new_ids, new_paths = wider.exclude(view).values(["id", "filepath"])
    expected, _ = encoders.embed_image_files(list(new_paths), encoder)
    got = np.stack([wider[i][FIELD] for i in new_ids])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)

    # another seed is another encoder: every vector anew
    other = elfs.compute_embeddings(wider, **{**ADAPT, "seed": 1})
    assert other["n_computed"] == 40 and other["adaptation"]["digest"] != info["digest"]
    assert _stored(dataset) == 1  # the replaced encoder's weights are gone
    kept = adapted_weights.describe(adapted_weights.name(
        dataset_io.dataset_id(dataset), KEY, "efficientnet-lite0", 128, 2, 1
    ))  # fmt: skip
    assert kept["digest"] == other["adaptation"]["digest"]
    owner = f"{dataset_io.dataset_id(dataset)}:{KEY}"
    parts = adapted_weights._db()[adapted_weights.PARTS].count_documents({"owner": owner})
    assert parts == kept["n_parts"]

    elfs.delete_key(dataset, KEY)
    assert _stored(dataset) == 0


class Interrupted(Exception):
    pass


def test_an_interrupted_adaptation_goes_on_from_its_checkpoint(small, monkeypatch):
    dataset, view = small
    monkeypatch.setattr(pool_adaptation, "CHECKPOINT_SECONDS", 0.0)
    options = {**ADAPT, "adapt_steps": 3}

    def stop_at_step_2(fraction, label):
        if "step 2/3" in label:
            raise Interrupted

    with pytest.raises(Interrupted):
        elfs.compute_embeddings(view, **options, progress=stop_at_step_2)
    name = adapted_weights.name(dataset_io.dataset_id(dataset), KEY, "efficientnet-lite0", 128,
                                3, 0)  # fmt: skip
    checkpoint = pool_adaptation.weights_from_bytes(adapted_weights.load_checkpoint(name))
    assert checkpoint["step"] == 1 and adapted_weights.describe(name) is None
    labels = []
    done = elfs.compute_embeddings(view, **options, progress=lambda f, label: labels.append(label))
    assert not any("step 1/3" in label for label in labels)  # step 1 was not trained again
    assert any("step 2/3" in label for label in labels)
    assert adapted_weights.load_checkpoint(name) is None  # gone once the weights are stored
    elfs.compute_embeddings(view, **{**options, "key": "straight"})
    straight = dataset.load_run_results("straight_embeddings").adaptation
    elfs.delete_key(dataset, "straight")
    assert done["adaptation"]["digest"] == straight["digest"]


def test_adaptation_with_an_encoder_it_does_not_fit_is_refused_before_any_work(small):
    dataset, view = small
    with pytest.raises(ElfsInputError, match="adapt_steps=0") as caught:
        elfs.compute_embeddings(view, key=KEY, model="timm:resnet18", adapt_steps=5)
    assert caught.value.param == "adapt_steps"
    with pytest.raises(ElfsInputError, match="adapt_steps=0"):
        elfs.run_pipeline(view, key=KEY, budget_count=5, model="zoo:clip-vit-base32-torch",
                          adapt_steps=5)  # fmt: skip
    with pytest.raises(ElfsInputError, match="embeddings_field='elfs_embedding' gives the"):
        elfs.run_pipeline(view, key=KEY, budget_count=5, embeddings_field="elfs_embedding",
                          adapt_steps=5)  # fmt: skip
    assert FIELD not in dataset.get_field_schema() and _stored(dataset) == 0
    assert not dataset.list_runs() or f"{KEY}_coreset" not in dataset.list_runs()


def test_the_first_stored_weights_win_and_the_loser_leaves_nothing(small):
    dataset, _ = small
    name = adapted_weights.name(dataset_io.dataset_id(dataset), KEY, "m", 32, 2, 0)
    parts = adapted_weights._db()[adapted_weights.PARTS]
    first = adapted_weights.store_first(name, b"first" * 10, "d1", 1.0)
    second = adapted_weights.store_first(name, b"second", "d2", 2.0)
    assert first[0] == second[0] == b"first" * 10 and second[1]["digest"] == "d1"
    assert parts.count_documents({"owner": name.rsplit(":", 1)[0]}) == 1


def test_shards_and_the_operator_embed_with_the_one_set_of_adapted_weights(small):
    dataset, view = small
    embed_shard = foo.get_operator("@fiftyone-elfs/elfs/embed_shard")
    for shard in range(2):
        result = embed_shard(view, shard, 2, **ADAPT)
        assert result.error is None, result.error
    assert _stored(dataset) == 1  # the second shard found the first one's weights
    compute = foo.get_operator("@fiftyone-elfs/elfs/compute_embeddings")
    result = compute(view, **ADAPT)
    assert result.error is None, result.error
    results = dataset.load_run_results(f"{KEY}_embeddings")
    assert (results.n_resumed, results.n_computed) == (30, 0)
    sharded = dict(zip(*view.values(["id", FIELD]), strict=True))
    elfs.delete_key(dataset, KEY)
    elfs.compute_embeddings(view, **ADAPT)  # one process, same pool, seed and steps
    whole = dict(zip(*view.values(["id", FIELD]), strict=True))
    np.testing.assert_allclose(
        np.stack([sharded[i] for i in whole]), np.stack(list(whole.values())), atol=1e-4
    )
