"""The App's forms refuse what execution would refuse, where a cheap check can tell (audit
"forms"): each case drives the real operator machinery (`resolve_input(...).to_json()`) on a
real dataset, and the refusal shows on the field to blame, with its fix; a valid form has no
error. Also: the final label of an App run carries the result's notices, the delegation default
is judged on the run's target, widths are bounded, and a deleted dataset gets a notice."""

from __future__ import annotations

import fiftyone as fo
import pytest
from fiftyone.operators.executor import ExecutionContext, Executor

import fiftyone_elfs as elfs
from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.plugin import delegation
from fiftyone_elfs.plugin.annotation_operators import ANNOTATION_OPERATORS
from fiftyone_elfs.plugin.operators import OPERATORS
from fiftyone_elfs.plugin.panel import ElfsPanel

KEY = "elfs"
OPERATOR = {op.name: op for op in (*OPERATORS, *ANNOTATION_OPERATORS)}
FAST = dict(n_clusters=4, clustering="kmeans", epochs=2, visualize=False)


def _props(dataset_name, name, form_params, **request):
    request_params = {"dataset_name": dataset_name, "params": form_params, **request}
    ctx = ExecutionContext(request_params=request_params, executor=Executor())
    return OPERATOR[name]().resolve_input(ctx).to_json()["type"]["properties"]


def _errors(dataset, name, form_params):
    """{field: message} of the form's invalid fields."""
    props = _props(dataset.name, name, form_params)
    return {n: p["error_message"] for n, p in props.items() if p.get("invalid")}


@pytest.fixture
def other_media():
    video = fo.Dataset()
    video.add_samples([fo.Sample(filepath=f"/tmp/elfs-forms-{i}.mp4") for i in range(5)])
    empty = fo.Dataset()
    yield {"video": video, "empty": empty}
    video.delete()
    empty.delete()


TARGET_CASES = [
    ("video", "run_elfs_pipeline", dict(budget_fraction=0.2, n_clusters=2), "'video' samples"),
    ("video", "compute_embeddings", {}, "'video' samples"),
    ("empty", "compute_embeddings", {}, "is empty"),
    ("empty", "compute_pseudo_labels", dict(n_clusters=2), "is empty"),
    ("empty", "compute_difficulty", {}, "is empty"),
    ("empty", "compute_contrastive_scores", {}, "is empty"),
]


@pytest.mark.parametrize("which, name, form_params, words", TARGET_CASES)
def test_the_form_refuses_an_empty_target_or_other_media_above_the_fields(
    other_media, which, name, form_params, words
):
    errors = _errors(other_media[which], name, form_params)
    assert list(errors) == ["target_error"], errors  # not on n_clusters or any other field
    assert "Fix:" in errors["target_error"]
    assert words in errors["target_error"]


DATA_CASES = [
    ("compute_embeddings", dict(key="x", model="efficientnet-lite7"), "model"),
    ("compute_embeddings", dict(key="x", model="zoo:no-such-model"), "model"),
    ("compute_embeddings", dict(key="mine"), "key"),  # the user's own 'mine_embedding'
    ("compute_pseudo_labels", dict(key="nokey", n_clusters=4), "key"),
    ("compute_pseudo_labels", dict(embeddings_field="no_such", n_clusters=4), "embeddings_field"),
    ("compute_visualization", dict(key="nokey", layout_method="pca"), "key"),
    (
        "compute_pseudo_labels",
        dict(embeddings_field="ground_truth", n_clusters=4),
        "embeddings_field",
    ),
    (
        "compute_visualization",
        dict(embeddings_field="ground_truth", layout_method="pca"),
        "embeddings_field",
    ),
    ("compute_difficulty", dict(key="nokey"), "key"),
    ("compute_difficulty", dict(label_field="no_such"), "label_field"),
    ("select_coreset", dict(budget_fraction=0.2, score="contrastive"), "score"),
    ("select_coreset", dict(budget_fraction=0.2), "key"),  # round 2 is built on it
    ("select_more", dict(key="other", budget_count=2), "key"),
    ("run_elfs_pipeline", dict(key="mine", budget_fraction=0.2, **FAST), "key"),  # mine_aum
    ("run_elfs_pipeline", dict(budget_fraction=0.2, **FAST), "key"),  # round 2 is built on it
    ("embed_shard", dict(shard=5, n_shards=2), "shard"),
    ("send_to_label_studio", dict(anno_key="round1", classes="0, 1"), "label_field"),
    (
        "send_to_label_studio",
        dict(anno_key="r", classes="0", label_field="filepath"),
        "label_field",
    ),
    (
        "send_to_label_studio",
        dict(anno_key="r", classes="0", label_field="h", prelabel_field="no"),
        "prelabel_field",
    ),
]


@pytest.fixture(scope="module")
def busy(scored):
    """The module's scored dataset with a second round, an 'other' key with only pseudo-labels
    and the user's own fields 'mine_aum' and 'mine_embedding'."""
    ds = scored.clone()
    elfs.select_more(ds, key=KEY, budget_count=2)
    ds.add_sample_field("mine_aum", fo.FloatField)
    ds.add_sample_field("mine_embedding", fo.FloatField)
    yield ds
    ds.delete()


@pytest.mark.parametrize("name, form_params, field", DATA_CASES)
def test_the_form_refuses_on_the_right_field_what_execution_would(busy, name, form_params, field):
    errors = _errors(busy, name, form_params)
    assert list(errors) == [field], errors
    assert "Fix:" in errors[field]


def test_the_forms_refuse_what_the_rounds_rule_and_stale_inputs_would_refuse(ds):
    """Audit 'operators' #4: these passed the form (Execute enabled) and failed at execution."""
    elfs.select_coreset(ds, key=KEY, budget_fraction=0.2, mode="ccs")
    errors = _errors(ds, "select_more", dict(budget_count=2, score="contrastive"))
    assert list(errors) == ["score"] and "No 'contrastive' scores" in errors["score"]
    elfs.select_coreset(ds, key=KEY, budget_fraction=0.2, mode="typical")
    errors = _errors(ds, "select_more", dict(budget_count=2, beta_mode="manual", beta=0.2))
    assert list(errors) == ["beta"] and "mode='typical'" in errors["beta"]
    assert _errors(ds, "select_more", dict(budget_count=2, score="contrastive")) == {}
    # pseudo-labels computed again: the scores are of the earlier ones
    elfs.compute_embeddings(ds, key="st")
    elfs.compute_pseudo_labels(ds, key="st", n_clusters=3, clustering="kmeans")
    elfs.compute_difficulty(ds, key="st", epochs=1)
    elfs.compute_pseudo_labels(ds, key="st", n_clusters=4, clustering="kmeans")
    errors = _errors(ds, "select_coreset", dict(key="st", budget_fraction=0.2))
    assert list(errors) == ["score"] and "earlier pseudo-labels" in errors["score"]
    # embeddings computed again: the pseudo-labels are of the earlier vectors
    elfs.compute_embeddings(ds, key="st", overwrite=True)
    errors = _errors(ds, "compute_difficulty", dict(key="st"))
    assert list(errors) == ["embeddings_field"], errors
    assert "were recomputed" in errors["embeddings_field"]


VALID = [
    ("compute_pseudo_labels", dict(n_clusters=4)),
    ("compute_difficulty", {}),
    ("compute_visualization", dict(layout_method="pca")),
    ("select_coreset", dict(budget_fraction=0.2)),
    ("select_more", dict(budget_count=2)),
    ("run_elfs_pipeline", dict(key="fresh", budget_fraction=0.2, **FAST)),
    ("embed_shard", dict(shard=1, n_shards=2)),
    ("send_to_label_studio", dict(anno_key="r", classes="0, 1", label_field="human")),
]


@pytest.mark.parametrize("name, form_params", VALID)
def test_a_valid_form_still_has_no_error(ds, name, form_params):
    assert _errors(ds, name, form_params) == {}


def test_the_select_more_form_says_when_nothing_is_left_before_execute(ds):
    """It said so only when the round ran, after the user had clicked Execute."""
    copy = ds.clone()
    try:
        selected = set(elfs.select_coreset(copy, key=KEY, budget_fraction=0.5).selected_ids)
        free = [i for i in copy.values("id") if i not in selected]
        # every free sample but one labeled: one is left, then none
        copy.select(free[1:]).set_values("human", [fo.Classification(label="x")] * (len(free) - 1))
        assert _errors(copy, "select_more", dict(budget_count=2, label_field="human")) == {}
        copy.select(free[:1]).set_values("human", [fo.Classification(label="x")])
        errors = _errors(copy, "select_more", dict(budget_count=2, label_field="human"))
        assert list(errors) == ["target_error"], errors
        assert "nothing left to select" in errors["target_error"]
        assert "Fix:" in errors["target_error"]
        with pytest.raises(ElfsInputError, match="nothing left to select"):
            elfs.select_more(copy, key=KEY, budget_count=2, label_field="human")
        # without the label field the labeled samples are free; once a round takes them all,
        # the form says it before Execute, as the run would
        assert _errors(copy, "select_more", dict(budget_count=2)) == {}
        elfs.select_more(copy, key=KEY, budget_count=len(free))
        errors = _errors(copy, "select_more", dict(budget_count=2))
        assert list(errors) == ["target_error"] and "nothing left" in errors["target_error"]
        # a sample the user untagged stays selected: the form lets the run decide (no false
        # refusal), and the run refuses it
        copy.select(free[:1]).untag_samples(f"{KEY}_round2")
        assert _errors(copy, "select_more", dict(budget_count=2)) == {}
        with pytest.raises(ElfsInputError, match="nothing left"):
            elfs.select_more(copy, key=KEY, budget_count=2)
    finally:
        copy.delete()


def test_the_final_label_of_an_app_run_carries_the_result_notices(ds):
    copy = ds.clone()
    more = elfs.select_more(copy, key=KEY, budget_count=1000)
    copy.delete()
    label = OPERATOR["select_more"]().done_label(more, {})
    assert more.notices and all(notice in label for notice in more.notices)
    result = elfs.select_coreset(ds, key=KEY, budget_count=1000)
    assert result.notices
    for name in ("select_coreset", "run_elfs_pipeline"):
        label = OPERATOR[name]().done_label(result, {})
        assert label.startswith(f"selected {result.budget} samples")
        assert all(notice in label for notice in result.notices)


def test_the_embeddings_label_names_resumed_reused_and_skipped_images():
    result = dict(n_samples=10, n_computed=4, n_resumed=3, n_reused=0, n_skipped=3)
    label = OPERATOR["compute_embeddings"]().done_label(result, {})
    assert label == "embedded 4 images (3 resumed, 3 skipped)"
    shard = dict(shard=1, n_computed=5, n_resumed=0, n_skipped=0, queued="run_elfs_pipeline")
    label = OPERATOR["embed_shard"]().done_label(shard, {})
    assert label == "shard 1: embedded 5 images, then queued the pipeline"
    shard["queued"] = "compute_embeddings"
    label = OPERATOR["embed_shard"]().done_label(shard, {})
    assert label == "shard 1: embedded 5 images, then queued the field's write"


def test_the_delegation_default_is_judged_on_the_target_not_the_app_view(ds, monkeypatch):
    monkeypatch.setitem(delegation.DELEGATE_ABOVE, "run_elfs_pipeline", 20)  # ds has 40 samples
    small = ds.limit(5)._serialize()
    op = OPERATOR["run_elfs_pipeline"]()

    def delegated(target, view=None):
        request = {"dataset_name": ds.name, "params": {}, "view_target": target}
        if view is not None:
            request["view"] = view
        ctx = ExecutionContext(request_params=request, executor=Executor())
        return op.resolve_execution_options(ctx).default_choice_to_delegated

    assert delegated("DATASET", small) is True  # 40 samples run, whatever the App shows
    assert delegated("CURRENT_VIEW", small) is False
    assert delegated("DATASET") is True


def test_adapting_the_encoder_defaults_to_delegated_whatever_the_size(ds):
    def delegated(name, params):
        request = {"dataset_name": ds.name, "params": params, "view_target": "DATASET"}
        ctx = ExecutionContext(request_params=request, executor=Executor())
        return OPERATOR[name]().resolve_execution_options(ctx).default_choice_to_delegated

    for name in ("compute_embeddings", "run_elfs_pipeline"):  # 40 samples: immediate unless
        assert delegated(name, {}) is False
        assert delegated(name, {"adapt_steps": 300}) is True


def test_cnn_and_contrastive_widths_are_bounded_in_the_api_and_the_form(ds):
    with pytest.raises(ElfsInputError, match=r"cnn_params\['width'\] must be an integer in"):
        elfs.compute_difficulty(ds, key=KEY, proxy="cnn", cnn_params={"width": 10**9})
    errors = _errors(ds, "compute_difficulty", dict(proxy="cnn", cnn_width=10**9))
    assert list(errors) == ["cnn_width"] and "Fix:" in errors["cnn_width"]
    errors = _errors(ds, "compute_contrastive_scores", dict(width=10**9))
    assert list(errors) == ["width"] and "Fix:" in errors["width"]
    assert _errors(ds, "compute_contrastive_scores", dict(width=64)) == {}


def test_a_dataset_deleted_while_its_tab_is_open_gets_a_notice_not_a_traceback():
    gone = fo.Dataset()
    name = gone.name
    gone.delete()
    for op in ("select_coreset", "run_elfs_pipeline", "load_from_label_studio", "export_coreset"):
        props = _props(name, op, {"budget_fraction": 0.1})
        assert list(props) == ["dataset_gone"] and props["dataset_gone"]["invalid"]
        assert f"'{name}' no longer exists" in props["dataset_gone"]["error_message"]
    ctx = ExecutionContext(
        request_params={
            "dataset_name": name,
            "panel_id": "p",
            "panel_state": {},
            "params": {"__method__": "on_load", "panel_id": "p", "state": {}},
        },
        executor=Executor(),
    )
    panel = ElfsPanel()
    panel.on_load(ctx)
    panel.show_coreset(ctx)
    assert "no longer exists" in str(panel.render(ctx).to_json())
    request = {"dataset_name": name, "params": {}, "view_target": "DATASET"}
    options = OPERATOR["run_elfs_pipeline"]().resolve_execution_options(
        ExecutionContext(request_params=request, executor=Executor())
    )
    assert options.default_choice_to_delegated is False
