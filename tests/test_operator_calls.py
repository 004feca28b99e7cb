"""An operator's ``__call__`` from a script, notebook or queue gives what the library would: the
same values, the same errors, nothing stored that the database should not hold."""

from __future__ import annotations

import asyncio
import os
import re

import fiftyone.operators as foo
import numpy as np
import pytest
from fiftyone.operators.delegated import DelegatedOperationService
from fiftyone.operators.executor import ExecutionError, ExecutionResult, ExecutionRunState

import fiftyone_elfs as elfs
from fiftyone_elfs.errors import ElfsInputError

PLUGIN = "@fiftyone-elfs/elfs"
KEY = "c"
BUDGET = 6


def op(name: str):
    return foo.get_operator(f"{PLUGIN}/{name}")


def _queued(ds) -> list:
    return DelegatedOperationService().list_operations(dataset_name=ds.name)


def _stored_params(execution: ExecutionResult) -> dict:
    doc = DelegatedOperationService().get(execution.result["id"])
    return doc.context.request_params["params"]


def _choices(folder) -> list[str]:
    with open(os.path.join(folder, "labelstudio_config.xml")) as f:
        return re.findall(r'Choice value="([^"]*)"', f.read())


# --------------------------------------------------------------------------- a running loop


def test_a_call_inside_a_running_event_loop_blocks_and_returns_the_result(ds):
    """A notebook cell runs inside an event loop: the call still runs to its end there."""
    pseudo_labels = op("compute_pseudo_labels")

    async def cell():
        run = pseudo_labels(
            ds, n_clusters=3, clustering="kmeans", key="nb", embeddings_field="elfs_embedding"
        )
        with pytest.raises(ElfsInputError, match="'nokey_embedding' does not exist"):
            pseudo_labels(ds, n_clusters=3, clustering="kmeans", key="nokey")
        queued = op("select_coreset")(ds, budget_count=4, key=KEY, delegate=True)
        return run, queued

    run, queued = asyncio.run(cell())
    assert isinstance(run, ExecutionResult) and run.error is None
    assert sorted(run.result["cluster_sizes"]) and run.result["n_samples"] == 40
    assert len(ds.exists("nb_pseudo_label")) == 40  # written before the call returned
    assert isinstance(queued, ExecutionResult) and queued.delegated
    assert [o.run_state for o in _queued(ds)] == [ExecutionRunState.QUEUED]


# --------------------------------------------------------------------------- list values


def test_class_names_with_commas_reach_the_export_as_the_api_gives_them(ds, tmp_path):
    classes = ["tabby, cat", "dog"]
    elfs.export_coreset(
        ds, str(tmp_path / "api"), key=KEY, classes=classes, formats=["labelstudio"]
    )
    run = op("export_coreset")(
        ds, str(tmp_path / "op"), key=KEY, classes=classes, formats=["labelstudio"]
    )
    assert run.error is None
    assert _choices(tmp_path / "op") == _choices(tmp_path / "api") == classes
    # names that differ only once split on the comma are distinct names
    op("export_coreset")(
        ds, str(tmp_path / "op2"), key=KEY, classes=["cat,dog", "dog"], formats=["labelstudio"]
    )
    assert _choices(tmp_path / "op2") == ["cat,dog", "dog"]


def test_a_queued_run_keeps_the_list_and_the_form_text_still_splits(ds, tmp_path):
    out = str(tmp_path / "queued")
    queued = op("export_coreset")(
        ds, out, key=KEY, classes=["tabby, cat", "dog"], formats=["labelstudio"], delegate=True
    )
    assert _stored_params(queued)["classes"] == ["tabby, cat", "dog"]
    DelegatedOperationService().execute_queued_operations(dataset_name=ds.name, log=False)
    assert _choices(out) == ["tabby, cat", "dog"]
    form = str(tmp_path / "form")  # the App's text input: comma-separated names
    foo.execute_operator(
        f"{PLUGIN}/export_coreset",
        ctx=dict(view=ds.view()),
        params=dict(export_dir=form, key=KEY, classes="cat, dog", format_media=False),
    )
    assert _choices(form) == ["cat", "dog"]


# --------------------------------------------------------------------------- credentials


@pytest.mark.parametrize(
    "credentials",
    [
        dict(url="http://admin:hunter2@127.0.0.1:8080"),
        dict(url="http://127.0.0.1:8080", api_key="secret-token-xyz"),
        dict(api_key="secret-token-xyz"),
    ],
)
@pytest.mark.parametrize("name", ["send_to_label_studio", "load_from_label_studio"])
def test_credentials_are_not_queued_in_plain_text(ds, credentials, name):
    args = (ds, "round1", ["cat", "dog"]) if name == "send_to_label_studio" else (ds, "round1")
    with pytest.raises(ElfsInputError) as refused:
        op(name)(*args, delegate=True, **credentials)
    message = str(refused.value)
    assert "plain text" in message and "Fix:" in message
    assert "FIFTYONE_LABELSTUDIO_URL" in message and "FIFTYONE_LABELSTUDIO_API_KEY" in message
    assert "hunter2" not in message and "secret-token" not in message
    assert _queued(ds) == []


def test_a_url_without_credentials_may_be_queued(ds):
    queued = op("send_to_label_studio")(
        ds.match_tags(f"{KEY}_coreset"),
        "round1",
        ["cat", "dog"],
        label_field="human",
        url="http://127.0.0.1:8080",
        delegate=True,
    )
    assert queued.delegated and _stored_params(queued)["url"] == "http://127.0.0.1:8080"
    assert (
        "elfs_script_call"
        not in DelegatedOperationService().get(queued.result["id"]).context.request_params
    )


# --------------------------------------------------------------------------- refusals


def test_a_refusal_of_the_data_raises_the_librarys_error(ds):
    for kwargs in (
        dict(n_clusters=3, clustering="kmeans", key="nokey"),  # refused by the run
        dict(n_clusters=41, clustering="kmeans", embeddings_field="elfs_embedding"),  # the form
    ):
        with pytest.raises(ElfsInputError) as api:
            elfs.compute_pseudo_labels(ds, **kwargs)
        with pytest.raises(ElfsInputError) as call:
            op("compute_pseudo_labels")(ds, **kwargs)
        assert str(call.value) == str(api.value) and "Fix:" in str(call.value)
        assert "Traceback" not in str(call.value)
    with pytest.raises(ElfsInputError, match="n_clusters=41 is larger"):  # also when queued
        op("compute_pseudo_labels")(ds, n_clusters=41, key="q", delegate=True)
    assert _queued(ds) == []


def test_other_failures_stay_fiftyones_execution_error(ds, monkeypatch):
    from fiftyone_elfs.plugin import operators

    def broken(samples, **kwargs):
        raise RuntimeError("a bug, not bad input")

    monkeypatch.setattr(operators.ComputeVisualization, "function", staticmethod(broken))
    with pytest.raises(ExecutionError, match="RuntimeError: a bug, not bad input"):
        op("compute_visualization")(
            ds, key=KEY, layout_method="pca", embeddings_field="elfs_embedding"
        )


def test_a_failed_call_closes_its_progress_bar_where_it_stopped(ds, capfd):
    """The script's bar is closed and marked failed, not left open at 0% under the error."""
    with pytest.raises(ElfsInputError):
        op("compute_pseudo_labels")(ds, n_clusters=3, clustering="kmeans", key="nokey")
    err = capfd.readouterr().err
    bars = [line for line in re.split(r"[\r\n]", err) if "ELFS: compute pseudo-labels" in line]
    assert bars and bars[-1].rstrip().endswith("(failed)"), err[-2000:]
    op("compute_pseudo_labels")(
        ds, n_clusters=3, clustering="kmeans", key="bar", embeddings_field="elfs_embedding"
    )
    bars = [line for line in re.split(r"[\r\n]", capfd.readouterr().err) if "100%" in line]
    assert bars and "(failed)" not in bars[-1]  # a finished call keeps its last label


# --------------------------------------------------------------------------- queued values


def test_a_relative_export_folder_is_resolved_where_the_run_is_queued(ds, tmp_path, monkeypatch):
    here, worker = tmp_path / "here", tmp_path / "worker"
    here.mkdir(), worker.mkdir()
    monkeypatch.chdir(here)
    queued = op("export_coreset")(ds, "to_label", key=KEY, delegate=True)
    assert _stored_params(queued)["export_dir"] == str(here / "to_label")
    app = foo.execute_operator(  # queued from the App's form
        f"{PLUGIN}/export_coreset",
        ctx=dict(view=ds.view()),
        params=dict(export_dir="from_app", key=KEY),
        request_delegation=True,
    )
    assert _stored_params(app)["export_dir"] == str(here / "from_app")
    monkeypatch.chdir(worker)
    service = DelegatedOperationService()
    service.execute_queued_operations(dataset_name=ds.name, log=False)
    done = service.list_operations(dataset_name=ds.name)
    assert [o.run_state for o in done] == [ExecutionRunState.COMPLETED] * 2
    assert sorted(o.status.label for o in done) == [
        f"exported to {here / 'from_app'}",
        f"exported to {here / 'to_label'}",
    ]
    assert len(os.listdir(here / "to_label" / "media")) == 6
    assert os.path.isdir(here / "from_app" / "media") and os.listdir(worker) == []


def test_numpy_values_inside_dict_parameters_can_be_queued(ds, tmp_path):
    queued = op("compute_pseudo_labels")(
        ds,
        n_clusters=np.int64(3),
        key="np",
        embeddings_field="elfs_embedding",
        temi_params={"epochs": np.int64(3), "lr": np.float32(0.5)},
        delegate=True,
    )
    stored = _stored_params(queued)["temi_params"]
    assert stored == {"epochs": 3, "lr": 0.5} and type(stored["epochs"]) is int
    out = str(tmp_path / "np")
    cluster = ds.first()[f"{KEY}_pseudo_label"].label
    queued = op("export_coreset")(
        ds,
        out,
        key=KEY,
        classes=[np.str_("cat"), "dog"],
        prelabel_map={cluster: np.str_("cat")},
        formats=["labelstudio"],
        delegate=True,
    )
    assert _stored_params(queued)["prelabel_map"] == {cluster: "cat"}


def test_a_dataset_name_instead_of_a_dataset_is_a_clear_error():
    """op("my-dataset") failed with "'str' object has no attribute 'view'"."""
    operator = foo.get_operator(f"{PLUGIN}/compute_pseudo_labels")
    with pytest.raises(ElfsInputError, match=r"the name 'my-dataset'.*fo.load_dataset"):
        operator("my-dataset", n_clusters=2)


MLP_EPOCH = dict(epochs=1, embeddings_field="elfs_embedding")


def test_cnn_params_without_the_cnn_proxy_are_refused_as_the_library_refuses_them(ds):
    """Audit 'operators' #2: the call dropped cnn_params hidden by the form (proxy='mlp') and
    trained the MLP proxy without a word; the library refuses the combination."""
    with pytest.raises(ElfsInputError) as library:
        elfs.compute_difficulty(ds, key=KEY, cnn_params={"width": 8}, **MLP_EPOCH)
    with pytest.raises(ElfsInputError) as called:
        op("compute_difficulty")(ds, key=KEY, cnn_params={"width": 8}, **MLP_EPOCH)
    assert str(called.value) == str(library.value) and "proxy='cnn'" in str(called.value)
    with pytest.raises(ElfsInputError, match="proxy='cnn'"):
        op("run_elfs_pipeline")(
            ds, key="cnnp", budget_count=4, cnn_params={"arch": "resnet18"}, clustering="kmeans"
        )
    assert "cnnp" not in elfs.list_keys(ds)
