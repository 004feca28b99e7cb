"""FiftyOne zoo models as the encoder (``model="zoo:<name>"``): FiftyOne embeds and writes the
vectors itself. Replacing a key's embeddings with one must keep the old vectors until the new
ones are all computed, as the package's encoders do (`test_embedding_replace`).

No zoo model can be downloaded here, so `fiftyone.zoo.load_zoo_model` hands out a real FiftyOne
model class written for the test (its embedding: an image's 4x4 grid of mean grey levels). Its
vectors go through FiftyOne's own `compute_embeddings`, on real images in the real database.
"""

from __future__ import annotations

import fiftyone as fo
import fiftyone.core.models as fom
import fiftyone.zoo as foz
import numpy as np
import pytest
from dataset_state import snapshot

import fiftyone_elfs as elfs
from fiftyone_elfs import dataset_io, embedding_chunks

N = 20
KEY = "zm"
FIELD = f"{KEY}_embedding"
RUN = f"{KEY}_embeddings"
KEPT = [FIELD, f"{FIELD}_replacing", "ground_truth"]  # (FiftyOne stamps last_modified_at)


class GridMeans(fom.Model, fom.EmbeddingsMixin):
    """A FiftyOne model with embeddings: an image's 4x4 grid of mean grey levels, times
    `scale`. `interrupt_after`: a Ctrl-C (KeyboardInterrupt) once that many images are done."""

    def __init__(self, scale: float = 1.0, interrupt_after: int | None = None) -> None:
        self.scale, self.interrupt_after, self.done = scale, interrupt_after, 0

    @property
    def media_type(self) -> str:
        return "image"

    @property
    def transforms(self) -> None:
        return None

    @property
    def preprocess(self) -> bool:
        return False

    @preprocess.setter
    def preprocess(self, value: bool) -> None:
        pass

    @property
    def ragged_batches(self) -> bool:
        return False

    @property
    def has_embeddings(self) -> bool:
        return True

    def predict(self, arg):
        raise NotImplementedError("an embeddings-only model")

    def predict_all(self, args):
        raise NotImplementedError("an embeddings-only model")

    def embed(self, arg) -> np.ndarray:
        if self.interrupt_after is not None and self.done >= self.interrupt_after:
            raise KeyboardInterrupt
        self.done += 1
        grey = np.asarray(arg, dtype=np.float64)
        grey = grey.mean(axis=2) if grey.ndim == 3 else grey
        h, w = grey.shape[0] // 4 * 4, grey.shape[1] // 4 * 4
        cells = grey[:h, :w].reshape(4, h // 4, 4, w // 4).mean(axis=(1, 3))
        return (self.scale * cells.ravel() + 1.0).astype(np.float32)

    def embed_all(self, args) -> np.ndarray:
        return np.stack([self.embed(a) for a in args])


@pytest.fixture
def zoo(monkeypatch):
    """`zoo:grid` and `zoo:grid2` load the test's model (scale 1 and 2); returns a dict whose
    "next" entry, when set, is handed out by the next load instead."""
    handed: dict = {}

    def load_zoo_model(name, *args, **kwargs):
        model = handed.pop("next", None)
        return model or GridMeans(scale={"grid": 1.0, "grid2": 2.0}[name])

    known = foz.get_zoo_model

    def get_zoo_model(name, *args, **kwargs):
        return name if name in ("grid", "grid2") else known(name, *args, **kwargs)

    monkeypatch.setattr(foz, "load_zoo_model", load_zoo_model)
    monkeypatch.setattr(foz, "get_zoo_model", get_zoo_model)
    return handed


@pytest.fixture
def embedded(base_dataset, zoo):
    """N real images with the key's embeddings from `zoo:grid` (and nothing else of ELFS)."""
    ds = base_dataset.take(N, seed=8).clone()
    elfs.compute_embeddings(ds, key=KEY, model="zoo:grid", batch_size=4)
    yield ds
    embedding_chunks.clear(dataset_io.dataset_id(ds), KEY)
    ds.delete()


def _vectors(ds) -> dict[str, np.ndarray]:
    return dict(zip(ds.values("id"), np.asarray(ds.values(FIELD), dtype=float), strict=True))


def test_a_zoo_model_embeds_every_image_and_the_key_selects_on_them(embedded):
    vectors = _vectors(embedded)
    assert len(vectors) == N and all(v.shape == (16,) for v in vectors.values())
    assert embedded.get_run_info(RUN).config.model == "zoo:grid"
    result = elfs.select_coreset(embedded, key=KEY, budget_count=5, mode="typical")
    assert len(result.selected_ids) == 5


def test_replacing_with_another_zoo_model_swaps_the_vectors_and_leaves_no_scratch(embedded):
    old = _vectors(embedded)
    elfs.compute_embeddings(embedded, key=KEY, model="zoo:grid2", batch_size=4)
    new = _vectors(embedded)
    assert set(new) == set(old)
    for i in old:  # the scale-2 model's vectors: 2 (v - 1) + 1
        np.testing.assert_allclose(new[i], 2 * old[i] - 1, rtol=1e-5)
    assert embedded.get_run_info(RUN).config.model == "zoo:grid2"
    assert f"{FIELD}_replacing" not in embedded.get_field_schema()


def test_an_interrupted_zoo_replacement_keeps_the_old_vectors_and_run(embedded, zoo):
    """The old vectors were deleted before FiftyOne wrote the new ones: a Ctrl-C midway lost
    them (half the samples then held the new model's vectors, the rest none)."""
    before = snapshot(embedded, fields=KEPT)
    zoo["next"] = GridMeans(scale=2.0, interrupt_after=9)
    with pytest.raises(KeyboardInterrupt):
        elfs.compute_embeddings(embedded, key=KEY, model="zoo:grid2", batch_size=4)
    embedded.reload()
    assert snapshot(embedded, fields=KEPT) == before
    assert f"{FIELD}_replacing" not in embedded.get_field_schema()
    elfs.compute_embeddings(embedded, key=KEY, model="zoo:grid2", batch_size=4)  # and again
    assert embedded.get_run_info(RUN).config.model == "zoo:grid2"


def test_a_user_field_where_the_scratch_field_goes_is_refused_and_kept(embedded):
    embedded.add_sample_field(f"{FIELD}_replacing", fo.StringField)
    embedded.set_values(f"{FIELD}_replacing", ["mine"] * N)
    before = snapshot(embedded, fields=KEPT)
    with pytest.raises(elfs.ElfsInputError, match=f"{FIELD}_replacing"):
        elfs.compute_embeddings(embedded, key=KEY, model="zoo:grid2", batch_size=4)
    assert snapshot(embedded, fields=KEPT) == before


class Failing(GridMeans):
    """A zoo model that can embed no image (FiftyOne skips each failure)."""

    def embed(self, arg) -> np.ndarray:
        raise ValueError("cannot embed")


def test_a_zoo_replacement_that_embeds_nothing_is_refused_over_the_images(embedded, zoo):
    """Audit 'regress3' #5: the refusal named the internal scratch field and told the user to
    run the call that had just failed."""
    before = snapshot(embedded, fields=KEPT)
    zoo["next"] = Failing()
    with pytest.raises(elfs.ElfsInputError, match=f"None of the {N} images") as caught:
        elfs.compute_embeddings(embedded, key=KEY, model="zoo:grid2", batch_size=4)
    assert "_replacing" not in str(caught.value)
    assert snapshot(embedded, fields=KEPT) == before


def test_a_zoo_name_the_zoo_does_not_list_is_refused_before_anything(embedded):
    """Audit 'operators' #4: a misspelt zoo name passed the form and failed at the load."""
    before = snapshot(embedded)
    with pytest.raises(elfs.ElfsInputError, match="model zoo has no model 'grid3'.*Fix:"):
        elfs.compute_embeddings(embedded, key="other", model="zoo:grid3")
    with pytest.raises(elfs.ElfsInputError, match="model zoo has no model 'grid3'"):
        elfs.run_pipeline(embedded, key="other", model="zoo:grid3", budget_count=4)
    assert snapshot(embedded) == before


def test_a_field_made_by_the_zoo_model_carries_the_runs_mark_from_the_start(base_dataset, zoo):
    """A field a zoo model writes is declared with the run's mark before FiftyOne writes it, so
    an interruption leaves a leftover the next run recognises (not one taken for the user's)."""
    ds = base_dataset.take(N, seed=9).clone()
    try:
        seen = {}

        class Stopped(BaseException):  # as an interruption: FiftyOne's skip_failures lets it by
            pass

        def check_then_stop(*args, **kwargs):
            seen["mark"] = dataset_io.field_mark(ds, f"{KEY}_embedding")
            raise Stopped()

        zoo["next"] = GridMeans(scale=1.0)
        zoo["next"].embed_all = check_then_stop
        with pytest.raises(Stopped):
            elfs.compute_embeddings(ds, key=KEY, model="zoo:grid", batch_size=4)
        assert seen["mark"] == {"key": KEY, "stage": "embeddings"}
        elfs.compute_embeddings(ds, key=KEY, model="zoo:grid", batch_size=4)  # cleaned, rerun
        assert ds.count(f"{KEY}_embedding") == N
    finally:
        ds.delete()


def test_a_versioned_zoo_model_is_known_by_its_plain_name(tmp_path, monkeypatch):
    """Audit 'regress5' #3: a model FiftyOne lists only as 'name@version' (and loads by its
    plain name, the latest version) was refused by an exact match on the listed names."""
    import json

    from fiftyone_elfs.stages.zoo_embeddings import check_zoo_name

    model = {
        "base_name": "tiny-embedder",
        "base_filename": "tiny-embedder.pt",
        "version": "2.0",
        "description": "a manifest entry only: nothing is downloaded",
        "source": "local",
        "manager": {"type": "fiftyone.core.models.ModelManager", "config": {"url": "x"}},
        "default_deployment_config_dict": {"type": "fiftyone.core.models.Model", "config": {}},
        "requirements": {"packages": []},
        "tags": ["embeddings"],
        "date_added": "2026-01-01 00:00:00",
    }
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"models": [model]}))
    monkeypatch.setattr(fo.config, "model_zoo_manifest_paths", [str(manifest)])
    assert "tiny-embedder@2.0" in foz.list_zoo_models()
    check_zoo_name("zoo:tiny-embedder")
    check_zoo_name("zoo:tiny-embedder@2.0")
    with pytest.raises(elfs.ElfsInputError, match="no model 'tiny-embeder'"):
        check_zoo_name("zoo:tiny-embeder")
