"""The plugin through FiftyOne's own operator machinery: discovery, immediate and delegated runs."""

from __future__ import annotations

import os

import fiftyone.operators as foo
import pytest
from fiftyone.operators.delegated import DelegatedOperationService
from fiftyone.operators.executor import ExecutionRunState
from fiftyone.operators.registry import OperatorRegistry

import fiftyone_elfs as elfs

PLUGIN = "@fiftyone-elfs/elfs"
OPERATOR_NAMES = [
    "compute_embeddings",
    "compute_pseudo_labels",
    "compute_difficulty",
    "select_coreset",
    "export_coreset",
    "run_elfs_pipeline",
    "send_to_label_studio",
    "load_from_label_studio",
    "select_more",
]


def uri(name: str) -> str:
    return f"{PLUGIN}/{name}"


def test_plugin_loads_without_errors_and_lists_every_operator():
    registry = OperatorRegistry()
    assert registry.list_errors() == []
    for name in OPERATOR_NAMES:
        assert registry.operator_exists(uri(name)), name
    with open(
        os.path.join(os.path.dirname(__file__), "..", "fiftyone_elfs", "plugin", "fiftyone.yml")
    ) as f:
        declared = f.read()
    assert all(f"- {name}" in declared for name in OPERATOR_NAMES)


def test_stage_operators_run_immediately_from_a_script(dataset, tmp_path):
    view = dataset.take(200, seed=0)
    foo.get_operator(uri("compute_pseudo_labels"))(
        view, n_clusters=8, clustering="kmeans", key="op", embeddings_field="elfs_embedding"
    )
    assert len(dataset.exists("op_pseudo_label")) == 200
    foo.get_operator(uri("compute_difficulty"))(
        view, key="op", embeddings_field="elfs_embedding", epochs=3
    )
    assert len(dataset.exists("op_aum")) == 200
    foo.get_operator(uri("select_coreset"))(view, budget_count=30, beta=0.1, key="op")
    assert len(dataset.match_tags("op_coreset")) == 30
    assert dataset.load_run_results("op_coreset").beta == pytest.approx(0.1)
    out = str(tmp_path / "export")
    foo.get_operator(uri("export_coreset"))(
        dataset, out, key="op", formats=("media", "labelstudio")
    )
    assert len(os.listdir(os.path.join(out, "media"))) == 30
    assert os.path.isfile(os.path.join(out, "labelstudio_tasks.json"))
    assert not os.path.exists(os.path.join(out, "fiftyone_dataset"))


def test_spectral_clustering_through_the_pseudo_labels_operator(dataset):
    view = dataset.take(120, seed=5)
    result = foo.get_operator(uri("compute_pseudo_labels"))(
        view, n_clusters=6, clustering="spectral", key="spec", embeddings_field="elfs_embedding"
    )
    assert result.error is None
    labels = view.values("spec_pseudo_label.label")
    assert len(labels) == 120 and all(lab is not None for lab in labels)
    assert len(set(labels)) == 6  # every spectral cluster holds samples
    info = dataset.get_run_info("spec_pseudo_labels")
    assert info.config.clustering == "spectral"
    assert dataset.load_run_results("spec_pseudo_labels").trust["n_samples"] == 120


def test_spectral_on_too_few_samples_gives_way_to_kmeans_and_says_so(dataset):
    # 3 samples, 3 clusters: the spectral space had one direction and every sample landed in
    # one cluster, recorded as spectral pseudo-labels without a word
    view = dataset.take(5, seed=1)
    result = foo.get_operator(uri("compute_pseudo_labels"))(
        view, n_clusters=3, clustering="spectral", key="tiny", embeddings_field="elfs_embedding"
    )
    assert result.error is None
    results = dataset.load_run_results("tiny_pseudo_labels")
    assert results.fallback.startswith("Spectral clustering into 3 clusters needs at least 12")
    assert results.clustering_used == "kmeans"
    assert len(set(view.values("tiny_pseudo_label.label"))) == 3
    assert "Spectral clustering into 3" in elfs.summarize_run(dataset, "tiny").clustering_fallback


def test_compute_embeddings_operator_writes_the_field(dataset):
    view = dataset.take(20, seed=3)
    result = foo.get_operator(uri("compute_embeddings"))(view, key="fresh")
    assert result.error is None
    assert len(dataset.exists("fresh_embedding")) == 20
    assert "fresh_embeddings" in dataset.list_runs()


def test_pipeline_operator_through_execute_operator_with_a_view(dataset):
    view = dataset.take(150, seed=1)
    result = foo.execute_operator(
        uri("run_elfs_pipeline"),
        ctx=dict(view=view),
        params=dict(
            key="pipe",
            budget_mode="fraction",
            budget_fraction=0.2,
            n_clusters=5,
            clustering="kmeans",
            embeddings_field="elfs_embedding",
        ),
    )
    assert result.error is None
    tagged = dataset.match_tags("pipe_coreset")
    assert len(tagged) == 30
    assert set(tagged.values("id")) <= set(view.values("id"))
    assert dataset.has_saved_view("pipe-coreset")


def test_form_validation_stops_bad_runs_and_changes_nothing(dataset):
    elfs.run_pipeline(
        dataset,
        budget_fraction=0.1,
        n_clusters=5,
        clustering="kmeans",
        embeddings_field="elfs_embedding",
        epochs=2,
    )
    before = (sorted(dataset.get_field_schema()), dataset.count_sample_tags(), dataset.list_runs())
    bad = [
        dict(budget_mode="fraction", budget_fraction=1.5),
        dict(budget_mode="count", budget_count=0),
        dict(budget_mode="fraction", budget_fraction=0.1, beta_mode="manual", beta=1.2),
        dict(budget_mode="fraction", budget_fraction=0.1, key="bad key"),
    ]
    for params in bad:
        with pytest.raises(Exception, match="Validation error|must|invalid|Invalid"):
            result = foo.execute_operator(
                uri("select_coreset"), ctx=dict(dataset=dataset), params=params
            )
            result.raise_exceptions()
    with pytest.raises(Exception, match="Validation error"):
        foo.execute_operator(
            uri("compute_pseudo_labels"),
            ctx=dict(dataset=dataset),
            params=dict(n_clusters=len(dataset) + 1),
        ).raise_exceptions()
    # a mistyped key is flagged by the form, not after the run started
    for operator, params in (
        ("select_coreset", dict(budget_mode="fraction", budget_fraction=0.1, key="typo")),
        ("export_coreset", dict(export_dir="/tmp/elfs-never-written", key="typo")),
    ):
        with pytest.raises(Exception, match="Validation error.*'typo'"):
            foo.execute_operator(
                uri(operator), ctx=dict(dataset=dataset), params=params
            ).raise_exceptions()
    assert not os.path.exists("/tmp/elfs-never-written")
    after = (sorted(dataset.get_field_schema()), dataset.count_sample_tags(), dataset.list_runs())
    assert after == before


def test_delegated_pipeline_is_queued_then_executed(dataset):
    name = uri("run_elfs_pipeline")
    queued = foo.get_operator(name)(
        dataset,
        budget_count=40,
        n_clusters=6,
        clustering="kmeans",
        key="later",
        embeddings_field="elfs_embedding",
        delegate=True,
    )
    assert queued.delegated
    assert len(dataset.match_tags("later_coreset")) == 0  # nothing happens until a worker runs it
    service = DelegatedOperationService()
    service.execute_queued_operations(operator=name, dataset_name=dataset.name)
    ops = service.list_operations(operator=name, dataset_name=dataset.name)
    assert ops and ops[-1].run_state == ExecutionRunState.COMPLETED, ops[-1].run_state
    assert ops[-1].status is not None and ops[-1].status.progress == pytest.approx(1.0)
    assert len(dataset.match_tags("later_coreset")) == 40


def test_large_targets_default_to_delegated_execution(dataset):
    from fiftyone.operators.executor import ExecutionContext

    from fiftyone_elfs.plugin import operators

    ctx = ExecutionContext(request_params={"dataset_name": dataset.name, "params": {}})
    small = operators.RunElfsPipeline().resolve_execution_options(ctx)
    assert small.allow_delegated_execution and small.allow_immediate_execution
    assert not small.default_choice_to_delegated
    old = operators.DELEGATE_ABOVE["run_elfs_pipeline"]
    operators.DELEGATE_ABOVE["run_elfs_pipeline"] = len(dataset) - 1
    try:
        assert (
            operators.RunElfsPipeline().resolve_execution_options(ctx).default_choice_to_delegated
        )
    finally:
        operators.DELEGATE_ABOVE["run_elfs_pipeline"] = old


def test_operators_without_a_progress_callback_report_progress_the_same_way(dataset):
    """Progress is reported one way: select_coreset, delegated, records its final label too."""
    elfs.run_pipeline(
        dataset,
        budget_fraction=0.1,
        n_clusters=5,
        clustering="kmeans",
        embeddings_field="elfs_embedding",
        epochs=2,
        visualize=False,
    )
    name = uri("select_coreset")
    foo.get_operator(name)(dataset, budget_count=20, delegate=True)
    service = DelegatedOperationService()
    service.execute_queued_operations(operator=name, dataset_name=dataset.name)
    op = service.list_operations(operator=name, dataset_name=dataset.name)[-1]
    assert op.run_state == ExecutionRunState.COMPLETED
    assert (op.status.progress, op.status.label) == (1.0, "selected 20 samples")
    assert len(dataset.match_tags("elfs_coreset")) == 20


_WORKER = """
import sys
from fiftyone.operators.delegated import DelegatedOperationService
from fiftyone_elfs.plugin import delegation

delegation.STOP_CHECK_S = 0.0  # read the operation's state at every report, not every 10 s
DelegatedOperationService().execute_queued_operations(dataset_name=sys.argv[1], log=False)
"""


def test_a_queued_run_marked_failed_while_a_worker_runs_it_stops_and_writes_nothing(dataset):
    """`fiftyone delegated fail <id>` only changed the record: the worker computed on and wrote
    its scores. A real worker process runs the operation; this process marks it failed."""
    import subprocess
    import sys
    import time

    common = dict(key="stop", embeddings_field="elfs_embedding")
    elfs.compute_pseudo_labels(dataset, n_clusters=5, clustering="kmeans", **common)
    name = uri("compute_difficulty")
    foo.get_operator(name)(dataset, epochs=100_000, delegate=True, **common)  # hours if not stopped
    service = DelegatedOperationService()
    op_id = service.list_operations(operator=name, dataset_name=dataset.name)[-1].id
    worker = subprocess.Popen(
        [sys.executable, "-c", _WORKER, dataset.name], stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.time() + 180
        while time.time() < deadline:  # until it computes (its progress is recorded)
            op = service.get(op_id)
            if op.run_state == ExecutionRunState.RUNNING and op.status and op.status.progress:
                break
            assert worker.poll() is None, worker.stderr.read()[-3000:]
            time.sleep(0.5)
        else:
            pytest.fail("the worker never started computing")
        service.set_failed(op_id)  # what `fiftyone delegated fail <id>` does
        worker.wait(timeout=120)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0
    assert service.get(op_id).run_state == ExecutionRunState.FAILED
    assert elfs.list_keys(dataset)["stop"] == ["pseudo_labels"]  # no difficulty recorded
    assert dataset.get_field("stop_aum") is None


def test_the_report_that_finds_its_operation_failed_stops_the_run(dataset, monkeypatch):
    """The stop came one report late (the operator's thread read the state, the next report
    raised): with the CNN proxy, one epoch late. The context is a stand-in carrying what a
    worker's has (delegated, the operation's id); the operation is a real queued one."""
    from types import SimpleNamespace

    from fiftyone_elfs.plugin import delegation

    foo.get_operator(uri("compute_embeddings"))(dataset, key="stopme", delegate=True)
    service = DelegatedOperationService()
    op_id = service.list_operations(operator=uri("compute_embeddings"), dataset_name=dataset.name)
    ctx = SimpleNamespace(delegated=True, _delegated_operation_id=op_id[-1].id)
    monkeypatch.setattr(delegation, "STOP_CHECK_S", 0.0)
    sent = []
    report = delegation.StopWatch(ctx).reporter(sent.append)
    report(0.1, "running")
    service.set_failed(op_id[-1].id)
    with pytest.raises(delegation.RunStopped, match="marked failed"):
        report(0.2, "still running")
    assert sent == [(0.1, "running")]
    service.delete_operation(op_id[-1].id)
