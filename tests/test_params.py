"""The parameter tables against the code they drive: API signatures, stage configs, forms,
operator calls; and the bad-input cases that must reach ElfsInputError with the same message
through the API and through the operators."""

from __future__ import annotations

import dataclasses
import inspect
import warnings

import fiftyone as fo
import fiftyone.operators as foo
import numpy as np
import pytest
from fiftyone.operators.executor import ExecutionContext, ExecutionError

import fiftyone_elfs as elfs
from fiftyone_elfs import params, runs
from fiftyone_elfs.errors import ElfsInputError, input_boundary
from fiftyone_elfs.params import OPERATIONS, REQUIRED
from fiftyone_elfs.plugin.annotation_operators import ANNOTATION_OPERATORS
from fiftyone_elfs.plugin.operators import OPERATORS
from fiftyone_elfs.stages import (
    contrastive,
    difficulty,
    embeddings,
    pipeline,
    pseudo_labels,
    selection,
    selection_rounds,
    visualization,
)

PLUGIN = "@fiftyone-elfs/elfs"
FUNCTIONS = {
    "compute_embeddings": elfs.compute_embeddings,
    "embed_shard": elfs.embed_shard,
    "compute_pseudo_labels": elfs.compute_pseudo_labels,
    "compute_difficulty": elfs.compute_difficulty,
    "compute_contrastive_scores": elfs.compute_contrastive_scores,
    "select_coreset": elfs.select_coreset,
    "select_more": elfs.select_more,
    "compute_visualization": elfs.compute_visualization,
    "run_pipeline": elfs.run_pipeline,
    "export_coreset": elfs.export_coreset,
    "send_to_label_studio": elfs.send_to_label_studio,
    "load_from_label_studio": elfs.load_from_label_studio,
}
CONFIGS = {
    "compute_embeddings": embeddings.EmbeddingsConfig,
    "compute_pseudo_labels": pseudo_labels.PseudoLabelsConfig,
    "compute_difficulty": difficulty.DifficultyConfig,
    "compute_contrastive_scores": contrastive.ContrastiveConfig,
    "select_coreset": selection.CoresetConfig,
    "select_more": selection_rounds.RoundConfig,
    "compute_visualization": visualization.VisualizationConfig,
    "run_pipeline": pipeline.PipelineConfig,
}
OPERATOR_OF = {op.operation: op for op in (*OPERATORS, *ANNOTATION_OPERATORS)}
# Valid values of the parameters without a default, and a budget where one is needed.
REQUIRED_VALUES = {"export_dir": "/tmp/elfs-no-such-dir", "anno_key": "fresh", "classes": ["a"],
                   "shard": 0, "n_shards": 2}  # fmt: skip


def test_every_operation_has_a_function_and_an_operator():
    assert set(FUNCTIONS) == set(OPERATIONS) == set(OPERATOR_OF)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_table_names_and_defaults_equal_the_api_signature(name):
    """The API signatures are written out by hand; the tables must agree with them."""
    signature = inspect.signature(FUNCTIONS[name])
    parameters = dict(list(signature.parameters.items())[1:])  # after samples / dataset
    parameters.pop("progress", None)
    table = OPERATIONS[name]
    assert set(parameters) == set(table.names)
    for p in table.params:
        expected = inspect.Parameter.empty if p.default is REQUIRED else p.default
        assert parameters[p.name].default == expected, p.name
        kind = parameters[p.name].kind
        if p.required:  # data after samples: positional
            assert kind is inspect.Parameter.POSITIONAL_OR_KEYWORD, p.name
        else:  # options: keyword-only
            assert kind is inspect.Parameter.KEYWORD_ONLY, p.name


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_stage_configs_hold_exactly_the_table_parameters(name):
    fields = [f.name for f in dataclasses.fields(CONFIGS[name])]
    assert set(fields) == set(OPERATIONS[name].names)
    assert CONFIGS[name].OPERATION == name
    assert CONFIGS[name].with_defaults().key == "elfs"


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_docstrings_document_every_parameter_with_its_default(name):
    doc = FUNCTIONS[name].__doc__
    assert "Args:" in doc
    for p in OPERATIONS[name].params:
        assert f"    {p.name} (" in doc, p.name
        assert p.help, f"{name}.{p.name} has no help text"
        if not p.required:
            assert f"default {p.default!r}" in doc, p.name
    operator_doc = OPERATOR_OF[name].__call__.__doc__
    assert "Example::" in operator_doc and "Args:" in operator_doc
    # every keyword the call takes is described (cnn_width=... was in the signature only)
    for keyword in inspect.signature(OPERATOR_OF[name].__call__).parameters:
        if keyword not in ("self", "samples"):
            assert f"    {keyword}" in operator_doc.split("Args:", 1)[1], keyword


def test_operator_call_accepts_every_table_parameter():
    for name, operator in OPERATOR_OF.items():
        accepted = inspect.signature(operator.__call__).parameters
        assert set(OPERATIONS[name].names) <= set(accepted), name
    pipeline_call = inspect.signature(OPERATOR_OF["run_pipeline"].__call__).parameters
    assert {"cnn_params", "epochs", "temi_params", "cnn_width"} <= set(pipeline_call)


# --------------------------------------------------------------------------- one message


def _bad_values(p):
    if p.type in ("int", "float"):
        step = 1 if p.type == "int" else 0.5
        below = None if p.min is None else (p.min if p.min_open else p.min - step)
        above = None if p.max is None else (p.max if p.max_open else p.max + step)
        return [v for v in (below, above) if v is not None] + ["abc"]
    return {
        "bool": ["yes"],
        "str": [123],
        "choice": ["nope"],
        "identifier": ["bad key"],
        "dict": ["x"],
        "str_list": [[]],
        "subset": [[]],
    }[p.type]


def _cases():
    for name, operation in OPERATIONS.items():
        for p in operation.params:
            for bad in _bad_values(p):
                yield name, p.name, None, bad
            for sub in p.fields:
                for bad in _bad_values(sub):
                    yield name, p.name, sub.name, bad


def _api_kwargs(name, row, sub, bad):
    operation = OPERATIONS[name]
    kwargs = {n: v for n, v in REQUIRED_VALUES.items() if n in operation.names}
    if "budget_fraction" in operation.names and row not in ("budget_fraction", "budget_count"):
        kwargs["budget_fraction"] = 0.1
    kwargs[row] = {sub: bad} if sub else bad
    return kwargs


def _form_params(name, row, sub, bad):
    """What the App would send: the form's field names, the switch and condition set."""
    operation = OPERATIONS[name]
    form = {n: v for n, v in REQUIRED_VALUES.items() if n in operation.names}
    if "classes" in form:
        form["classes"] = ", ".join(form["classes"])
    param = operation.param(row)
    if "budget_fraction" in operation.names and row not in ("budget_fraction", "budget_count"):
        form["budget_fraction"] = 0.1
    for switch in operation.switches:
        form[switch.name] = next(
            (option for option, p in switch.options if p is not None and p.name == row),
            switch.options[0][0],
        )
    if param.shown_when:
        form[param.shown_when[0]] = param.shown_when[1]
    if sub:
        field = param.fields[[f.name for f in param.fields].index(sub)]
        if field.form:
            form[f"{param.form_prefix}_{sub}"] = bad
        else:
            form[row] = {sub: bad}
    elif param.type == "subset":
        form.update({f"{param.form_prefix}_{c}": False for c in param.choices})
    elif param.type == "str_list":
        form[row] = "," if param.optional else ""  # an optional list left empty is unset
    else:
        form[row] = bad
    return form


@pytest.fixture(scope="module")
def tiny():
    """A few samples (more than the default 10 clusters): every check below fails before the
    data is read."""
    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath=f"/tmp/elfs-tiny-{i}.jpg") for i in range(12)])
    yield ds
    ds.delete()


@pytest.mark.parametrize("name, row, sub, bad", list(_cases()))
def test_a_bad_value_gets_the_same_message_from_the_api_and_the_operator(tiny, name, row, sub, bad):
    with pytest.raises(ElfsInputError) as api_error:
        FUNCTIONS[name](tiny, **_api_kwargs(name, row, sub, bad))
    message = str(api_error.value)
    assert row in message or (sub and sub in message) or "Invalid" in message
    assert "Fix: " in message  # every range message names the fix

    # the operator's __call__ (a script) raises the same error ...
    operator = foo.get_operator(f"{PLUGIN}/{OPERATOR_OF[name].name}")
    with pytest.raises(ElfsInputError) as call_error:
        operator(tiny, **_api_kwargs(name, row, sub, bad))
    assert str(call_error.value) == message

    # ... and its form (the App) shows it on the field, or its execution raises it (hidden
    # parameters), unless the form refuses first for lack of data (nothing sent to Label Studio).
    shown = _operator_error(operator.uri, tiny, _form_params(name, row, sub, bad))
    if name == "load_from_label_studio" and not OPERATIONS[name].param(row).form:
        assert shown == "Nothing was sent to Label Studio from this dataset yet"
    else:
        assert shown == message


def _operator_error(uri, dataset, form_params):
    """The message of the first error running the operator with these form values."""
    try:
        result = foo.execute_operator(uri, ctx=dict(dataset=dataset), params=form_params)
    except ExecutionError as e:
        text = str(e)
        if text.startswith("Validation error"):  # the form refused: "... Reason: <message>"
            return text.split("Reason: ", 1)[1]
        return text.rsplit("ElfsInputError: ", 1)[1].strip()  # execution raised it
    return result.error_message


def test_both_budgets_through_the_operator_are_refused_not_silently_resolved(tiny):
    """Issue 9: the operator used to select budget_count and ignore budget_fraction."""
    expected = "Both budget_fraction=0.5 and budget_count=10 were given. Fix: pass only one"
    with pytest.raises(ElfsInputError, match=expected):
        elfs.select_coreset(tiny, budget_count=10, budget_fraction=0.5)
    for name in ("select_coreset", "run_elfs_pipeline", "select_more"):
        with pytest.raises(ElfsInputError, match=expected):
            foo.get_operator(f"{PLUGIN}/{name}")(tiny, budget_count=10, budget_fraction=0.5)
    with pytest.raises(ElfsInputError, match="No budget given. Fix: pass budget_fraction or"):
        elfs.run_pipeline(tiny)


def test_array_module_errors_reach_the_boundary_as_elfs_input_errors():
    from fiftyone_elfs.selection import resolve_budget

    with pytest.raises(ElfsInputError, match="No budget given"):
        with input_boundary():
            resolve_budget(10)
    with pytest.raises(ValueError) as other:  # not ours: unchanged
        with input_boundary():
            np.zeros(3).reshape(2)
    assert not isinstance(other.value, ElfsInputError)


# --------------------------------------------------------------------------- drifts (issue 14)


def _form(ctx_dataset, operator_cls, form_params):
    ctx = ExecutionContext(request_params={"dataset_name": ctx_dataset.name, "params": form_params})
    return operator_cls().resolve_input(ctx).to_json()


def _choices(form_json, name):
    prop = form_json["type"]["properties"][name]
    return prop["type"]["values"]


def test_pipeline_form_offers_only_the_scores_the_pipeline_accepts(tiny):
    form = _form(tiny, OPERATOR_OF["run_pipeline"], {})
    assert _choices(form, "score") == list(runs.SCORE_NAMES)
    assert "contrastive" in _choices(_form(tiny, OPERATOR_OF["select_coreset"], {}), "score")
    with pytest.raises(ElfsInputError, match="Unknown selection score 'contrastive'") as api:
        elfs.run_pipeline(tiny, budget_fraction=0.1, score="contrastive")
    form_params = dict(budget_mode="fraction", budget_fraction=0.1, score="contrastive")
    uri = f"{PLUGIN}/run_elfs_pipeline"
    assert _operator_error(uri, tiny, form_params) == str(api.value)


def test_cnn_width_and_image_size_ranges_are_the_same_in_the_api_and_the_form(tiny):
    with pytest.raises(ElfsInputError, match=r"cnn_params\['width'\] must be an integer in \[4,"):
        elfs.compute_difficulty(tiny, proxy="cnn", cnn_params={"width": 3})
    uri = f"{PLUGIN}/compute_difficulty"
    message = (
        "cnn_params['width'] must be an integer in [4, 256]; got 3. "
        "Fix: pass an integer in [4, 256], e.g. 16 (the default)."
    )
    assert _operator_error(uri, tiny, dict(proxy="cnn", cnn_width=3)) == message
    with pytest.raises(
        ElfsInputError, match=r"image_size must be an integer in \[32, 2048\] \(or None\)"
    ):
        elfs.compute_embeddings(tiny, image_size=16)


def test_pipeline_operator_passes_the_cnn_options_its_form_offers(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("ELFS_CACHE_DIR", str(tmp_path))
    view = dataset.take(40, seed=0)
    result = foo.get_operator(f"{PLUGIN}/run_elfs_pipeline")(
        view,
        budget_count=8,
        n_clusters=4,
        clustering="kmeans",
        embeddings_field="elfs_embedding",
        proxy="cnn",
        epochs=1,
        cnn_params={"width": 4, "image_size": 16, "lr": 0.05},
        visualize=False,
    )
    result.raise_exceptions()
    config = dataset.get_run_info("elfs_difficulty").config
    assert config.proxy == "cnn" and config.epochs == 1
    assert (config.cnn_params["width"], config.cnn_params["image_size"]) == (4, 16)
    # every setting that changes the scores is recorded (two learning rates read the same)
    assert (config.cnn_params["lr"], config.cnn_params["num_threads"]) == (0.05, None)
    assert len(dataset.match_tags("elfs_coreset")) == 8


# --------------------------------------------------------------------------- issue 9 cases


def test_bad_input_cases_reach_elfs_input_error_naming_the_fix(dataset):
    ids = dataset.values("id")
    dataset.set_values("words", dict(zip(ids, ["a"] * len(ids), strict=True)), key_field="id")
    with pytest.raises(ElfsInputError, match="does not hold numeric vectors.*Fix:"):
        elfs.compute_pseudo_labels(dataset, clustering="kmeans", embeddings_field="words")
    with pytest.raises(ElfsInputError, match="budget_fraction must be a number in.*'abc'.*Fix:"):
        elfs.select_coreset(dataset, budget_fraction="abc")
    for bad in (dict(budget_count=0), dict(budget_count=2.5), dict()):
        with pytest.raises(ElfsInputError, match="budget.*Fix:"):
            elfs.select_coreset(dataset, **bad)
    with pytest.raises(ElfsInputError, match="budget_fraction.*'abc'"):
        foo.get_operator(f"{PLUGIN}/select_coreset")(dataset, budget_fraction="abc")


def test_numpy_numbers_are_accepted_through_the_api_and_the_operator(dataset):
    elfs.run_pipeline(
        dataset,
        budget_fraction=np.float64(0.1),
        n_clusters=np.int64(5),
        clustering="kmeans",
        embeddings_field="elfs_embedding",
        epochs=2,
        visualize=False,
    )
    result = elfs.select_coreset(dataset, budget_count=np.int32(20), beta=np.float32(0.45))
    # the decimal the float32 prints as (0.45, not 0.449999988, which cut one sample less)
    assert result.budget == 20 and result.beta == 0.45
    assert dataset.get_run_info("elfs_coreset").config.beta == 0.45
    assert (
        result.selected_ids == elfs.select_coreset(dataset, budget_count=20, beta=0.45).selected_ids
    )
    op = foo.get_operator(f"{PLUGIN}/select_coreset")
    op(dataset, budget_fraction=np.float32(0.25), beta=np.float32(0.2)).raise_exceptions()
    assert len(dataset.match_tags("elfs_coreset")) == round(0.25 * len(dataset))


# --------------------------------------------------------------------------- names


def test_options_after_samples_are_keyword_only(tiny):
    with pytest.raises(TypeError):
        elfs.select_coreset(tiny, 10)
    with pytest.raises(TypeError):
        elfs.compute_pseudo_labels(tiny, 10)


def test_renamed_names_still_work_with_a_deprecation_warning(dataset):
    with pytest.warns(DeprecationWarning, match="'method' is deprecated; use 'clustering'"):
        elfs.compute_pseudo_labels(
            dataset, n_clusters=4, method="kmeans", key="old", embeddings_field="elfs_embedding"
        )
    assert dataset.get_run_info("old_pseudo_labels").config.clustering == "kmeans"
    with pytest.warns(DeprecationWarning, match="'proxy_epochs' is deprecated; use 'epochs'"):
        elfs.run_pipeline(
            dataset,
            budget_count=10,
            n_clusters=4,
            clustering="kmeans",
            key="old",
            embeddings_field="elfs_embedding",
            proxy_epochs=1,
            visualize=False,
        )
    assert dataset.get_run_info("old_difficulty").config.epochs == 1
    with pytest.warns(DeprecationWarning, match="list_runs is deprecated; use list_keys"):
        assert elfs.list_runs(dataset) == elfs.list_keys(dataset)
    with pytest.warns(DeprecationWarning, match="'method' is deprecated"):
        foo.get_operator(f"{PLUGIN}/compute_visualization")(
            dataset, key="old", method="pca", embeddings_field="elfs_embedding"
        ).raise_exceptions()
    assert dataset.get_run_info("old_visualization").config.layout_method == "pca"
    with pytest.warns(DeprecationWarning, match="delete_run is deprecated; use delete_key"):
        assert "coreset" in elfs.delete_run(dataset, "old")
    assert "old" not in elfs.list_keys(dataset)


def test_public_names_resolve_lazily():
    for name in elfs.__all__:
        assert getattr(elfs, name) is not None, name
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert callable(elfs.delete_key) and params.public


# --------------------------------------------------------------------------- record step


def test_an_output_another_key_owns_is_refused_before_anything_changes(dataset):
    elfs.compute_visualization(dataset, layout_method="pca", embeddings_field="elfs_embedding")
    before = dataset.load_brain_results("elfs_pca").points.copy()
    with pytest.raises(
        ElfsInputError, match="brain key 'elfs_pca' belongs to the 'visualization' stage of key"
    ):
        elfs.compute_visualization(
            dataset, key="b", brain_key="elfs_pca", embeddings_field="elfs_embedding"
        )
    assert np.array_equal(dataset.load_brain_results("elfs_pca").points, before)
    assert "b" not in elfs.list_keys(dataset)


def test_the_pipeline_checks_temi_params_before_computing_anything(dataset):
    with pytest.raises(ElfsInputError, match=r"Unknown temi_params \['nope'\]. Fix: use only"):
        elfs.run_pipeline(dataset, budget_fraction=0.1, key="t", temi_params={"nope": 1})
    # a device torch does not know, or a text where a number goes: torch's and Python's own
    # errors came after the PCA and the neighbour search
    for given, message in (
        ({"device": "gpu"}, r"temi_params\['device'\] must be a torch device"),
        ({"lr": "0.1"}, r"temi_params\['lr'\] must be a number"),
        ({"prior_momentum": None}, r"temi_params\['prior_momentum'\] must be a number"),
    ):
        with pytest.raises(ElfsInputError, match=message):
            elfs.run_pipeline(dataset, budget_fraction=0.1, key="t", temi_params=given)
    assert dataset.get_field("t_embedding") is None and "t" not in elfs.list_keys(dataset)


def test_temi_params_with_another_clustering_are_refused_not_ignored(dataset):
    """They were dropped without a word with clustering='kmeans' or 'spectral'."""
    for clustering in ("kmeans", "spectral"):
        with pytest.raises(ElfsInputError, match=rf"clustering='{clustering}', which does not"):
            elfs.run_pipeline(
                dataset,
                budget_fraction=0.1,
                key="t",
                clustering=clustering,
                temi_params={"epochs": 3},
            )
    assert dataset.get_field("t_embedding") is None and "t" not in elfs.list_keys(dataset)


def test_each_public_docstring_names_its_own_first_argument_and_the_progress_callback():
    """load_from_label_studio's Args listed a `samples` it does not take; `progress` was in no
    docstring."""
    import inspect

    import fiftyone_elfs as elfs

    for name in elfs.__all__:
        fn = getattr(elfs, name)
        if not callable(fn) or "Args:" not in (fn.__doc__ or ""):
            continue
        parameters = inspect.signature(fn).parameters
        args = fn.__doc__.split("Args:", 1)[1]
        first = next(iter(parameters))
        assert args.lstrip().startswith(f"{first}:"), name
        assert ("progress:" in args) == ("progress" in parameters), name
