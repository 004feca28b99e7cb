"""The annotation round trip against a real Label Studio server (installed by
scripts/setup_label_studio.sh, started here): send a coreset with pre-annotations, answer some
tasks through Label Studio's REST API as an annotator would, load back, select the next budget."""

from __future__ import annotations

import json
import os
import socket

import fiftyone as fo
import fiftyone.operators as foo
import pytest
import requests
from fiftyone.operators.executor import ExecutionContext, Executor
from label_studio_server import start_label_studio

import fiftyone_elfs as elfs
from fiftyone_elfs import annotation
from fiftyone_elfs.plugin.panel import ElfsPanel

pytestmark = pytest.mark.slow
PLUGIN = "@fiftyone-elfs/elfs"


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    """A fresh Label Studio server (a copy of the cached, migrated template data dir)."""
    server = start_label_studio(tmp_path_factory.mktemp("label-studio"))
    yield server
    server.stop()


@pytest.fixture
def creds(label_studio, monkeypatch):
    """The server's URL and key in FiftyOne's standard variables, as a user would set them."""
    monkeypatch.setenv(annotation.URL_ENV, label_studio.url)
    monkeypatch.setenv(annotation.API_KEY_ENV, label_studio.api_key)
    return label_studio


def _api(server, method, path, **kwargs):
    response = requests.request(
        method,
        server.url + path,
        headers={"Authorization": f"Token {server.api_key}"},
        timeout=30,
        **kwargs,
    )
    assert response.status_code in (200, 201, 204), (path, response.status_code, response.text)
    return response.json() if response.content else None


def _tasks(server, project_id):
    body = _api(server, "GET", "/api/tasks", params=dict(project=project_id, page_size=1000))
    return body["tasks"] if isinstance(body, dict) else body


def _answer(server, task_id, field, choice=None):
    """Posts an annotation like the labeling UI does; no choice means 'skip'."""
    result = []
    if choice is not None:
        result = [
            {
                "from_name": field,
                "to_name": "image",
                "type": "choices",
                "value": {"choices": [choice]},
            }
        ]
    _api(
        server,
        "POST",
        f"/api/tasks/{task_id}/annotations",
        json={"result": result, "was_cancelled": choice is None},
    )


def _snapshot(dataset):
    """Every field of every sample (labels by value), to prove nothing else changed."""
    fields = sorted(dataset.get_field_schema())

    def plain(v):
        return v.to_dict() if hasattr(v, "to_dict") else v.tolist() if hasattr(v, "tolist") else v

    # FiftyOne's annotate() fills in image metadata (width, height) of what it uploads, and
    # every write moves last_modified_at: both are FiftyOne's bookkeeping, not user data.
    return fields, {
        f: [plain(v) for v in dataset.values(f)]
        for f in fields
        if f not in ("metadata", "last_modified_at")
    }


def _pipeline(dataset):
    return elfs.run_pipeline(
        dataset,
        budget_fraction=0.1,
        n_clusters=10,
        clustering="kmeans",
        embeddings_field="elfs_embedding",
        epochs=5,
    )


def test_round_trip_counts_only_human_answers_then_selects_the_next_budget(dataset, creds):
    first = _pipeline(dataset)
    coreset = dataset.match_tags(first.tag)
    classes = sorted(set(dataset.values("ground_truth.label")))
    clusters = sorted(set(dataset.values("elfs_pseudo_label.label")))
    prelabel_map = {c: classes[i % len(classes)] for i, c in enumerate(clusters)}
    fields_before, values_before = _snapshot(dataset)

    sent = elfs.send_to_label_studio(
        coreset,
        "round1",
        classes,
        label_field="human",
        prelabel_field="elfs_pseudo_label",
        prelabel_map=prelabel_map,
    )
    assert sent["n_sent"] == len(coreset) == 30 and sent["n_prelabeled"] == 30
    results = dataset.load_annotation_results("round1")
    tasks = _tasks(creds, results.project_id)
    assert len(tasks) == 30
    assert all(t["total_predictions"] == 1 for t in tasks)  # every task pre-annotated
    sample_of = {int(t): s for t, s in results.uploaded_tasks.items()}
    truth = dict(zip(*dataset.values(["id", "ground_truth.label"]), strict=True))
    prelabel = dict(zip(*dataset.values(["id", "round1_prelabel.label"]), strict=True))

    # 12 answered (the first 4 accept the pre-annotation), 3 skipped, 15 never opened.
    task_ids = sorted(sample_of)
    answered, skipped = task_ids[:12], task_ids[12:15]
    expected = {}
    for i, task_id in enumerate(answered):
        sample_id = sample_of[task_id]
        choice = prelabel[sample_id] if i < 4 else truth[sample_id]
        _answer(creds, task_id, "round1_prelabel", choice)
        expected[sample_id] = choice
    for task_id in skipped:
        _answer(creds, task_id, "round1_prelabel")

    summary = elfs.load_from_label_studio(dataset, "round1")
    assert (summary.n_labeled, summary.n_skipped, summary.n_unanswered) == (12, 3, 15)
    labeled = dict(zip(*dataset.exists("human").values(["id", "human.label"]), strict=True))
    assert labeled == expected  # the 18 pre-annotated but unanswered tasks stay unlabeled
    stored = elfs.annotation_summary(dataset, "round1")
    assert (stored["n_labeled"], stored["n_skipped"], stored["n_unanswered"]) == (12, 3, 15)

    # Nothing but the new label field and the pre-annotation field appeared or changed.
    fields_after, values_after = _snapshot(dataset)
    assert set(fields_after) - set(fields_before) == {"human", "round1_prelabel"}
    assert all(values_after[f] == values_before[f] for f in values_before)

    # Answers given later come in on the next load.
    _answer(creds, task_ids[20], "round1_prelabel", truth[sample_of[task_ids[20]]])
    assert elfs.load_from_label_studio(dataset, "round1").n_labeled == 13

    # The next budget: never a sample already selected or labeled; its own run and tag.
    second = elfs.select_more(dataset, budget_count=30, label_field="human")
    assert second.round == 2 and len(second.selected_ids) == 30
    assert not set(second.selected_ids) & set(first.selected_ids)
    assert not set(second.selected_ids) & set(dataset.exists("human").values("id"))
    assert "round2" in elfs.list_keys(dataset)["elfs"]

    # Round 2 pre-annotates from round 1's answers: each cluster gets its members' majority.
    round2 = dataset.match_tags(second.tag)
    elfs.send_to_label_studio(
        round2, "round2", classes, label_field="human", prelabel_field="elfs_pseudo_label"
    )
    answered_clusters = {
        c: h
        for c, h in zip(
            *dataset.exists("human").values(["elfs_pseudo_label.label", "human.label"]),
            strict=True,
        )
    }
    for cluster, pre in zip(
        *round2.values(["elfs_pseudo_label.label", "round2_prelabel.label"]), strict=True
    ):
        if pre is not None:
            assert cluster in answered_clusters and pre in classes
        else:
            assert cluster not in answered_clusters
    summary2 = elfs.load_from_label_studio(dataset, "round2")
    assert summary2.n_labeled == 0 and summary2.n_unanswered == 30
    assert len(dataset.exists("human")) == 13  # round 2's pre-annotations never count

    # Clean up: the Label Studio project goes, the loaded labels stay.
    project_id = dataset.load_annotation_results("round2").project_id
    elfs.delete_label_studio_run(dataset, "round2", delete_project=True)
    gone = requests.get(
        f"{creds.url}/api/projects/{project_id}",
        headers={"Authorization": f"Token {creds.api_key}"},
        timeout=30,
    )
    assert gone.status_code == 404
    assert "round2" not in dataset.list_annotation_runs()
    assert dataset.get_field("round2_prelabel") is None and len(dataset.exists("human")) == 13


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_missing_or_wrong_credentials_fail_clearly_and_change_nothing(
    dataset, label_studio, monkeypatch
):
    _pipeline(dataset)
    view = dataset.match_tags("elfs_coreset")
    before = _snapshot(dataset), dataset.list_annotation_runs(), dataset.list_runs()
    monkeypatch.delenv(annotation.URL_ENV, raising=False)
    monkeypatch.delenv(annotation.API_KEY_ENV, raising=False)
    cases = [
        (dict(), "No Label Studio API key"),  # the URL falls back to FiftyOne's default
        (dict(url=label_studio.url), "No Label Studio API key"),
        (dict(url=label_studio.url, api_key="not-a-real-key"), "refused the API key"),
        (dict(url=f"http://127.0.0.1:{_closed_port()}", api_key="x" * 10), "Cannot reach"),
    ]
    for kwargs, message in cases:
        with pytest.raises(elfs.ElfsInputError, match=message):
            elfs.send_to_label_studio(view, "bad", ["a", "b"], label_field="human", **kwargs)
    ok = dict(url=label_studio.url, api_key=label_studio.api_key)
    with pytest.raises(elfs.ElfsInputError, match="non-empty list"):
        elfs.send_to_label_studio(view, "bad", [], **ok)
    with pytest.raises(elfs.ElfsInputError, match="already have a label"):
        elfs.send_to_label_studio(view, "bad", ["a"], label_field="ground_truth", **ok)
    with pytest.raises(elfs.ElfsInputError, match="not in classes"):
        elfs.send_to_label_studio(
            view,
            "bad",
            ["a"],
            label_field="human",
            prelabel_field="elfs_pseudo_label",
            prelabel_map={"x": "z"},
            **ok,
        )
    with pytest.raises(elfs.ElfsInputError, match="No annotation run 'nope'"):
        elfs.load_from_label_studio(dataset, "nope", **ok)
    after = _snapshot(dataset), dataset.list_annotation_runs(), dataset.list_runs()
    assert after == before


def test_operators_send_and_load_through_fiftyone(dataset, creds):
    _pipeline(dataset)
    view = dataset.match_tags("elfs_coreset")
    classes = sorted(set(dataset.values("ground_truth.label")))
    send = foo.get_operator(f"{PLUGIN}/send_to_label_studio")
    result = send(view, anno_key="op_round", classes=classes, label_field="human")
    result.raise_exceptions()
    assert elfs.annotation_summary(dataset, "op_round")["n_sent"] == 30
    assert dataset.load_annotation_results("op_round").uploaded_tasks
    # The form refuses a key already used, before anything runs.
    with pytest.raises(Exception, match="Validation error"):
        send(view, anno_key="op_round", classes=classes).raise_exceptions()
    results = dataset.load_annotation_results("op_round")
    task_id, sample_id = next(iter(results.uploaded_tasks.items()))
    _answer(creds, int(task_id), "op_round_prelabel", classes[0])
    loaded = foo.get_operator(f"{PLUGIN}/load_from_label_studio")(dataset, anno_key="op_round")
    loaded.raise_exceptions()
    info = elfs.annotation_summary(dataset, "op_round")
    assert info["loaded"] and (info["n_labeled"], info["n_unanswered"]) == (1, 29)
    assert dataset[sample_id]["human"].label == classes[0]
    more = foo.get_operator(f"{PLUGIN}/select_more")(dataset, budget_count=20, label_field="human")
    more.raise_exceptions()
    assert len(dataset.match_tags("elfs_round2")) == 20
    assert isinstance(dataset.get_field("human"), fo.EmbeddedDocumentField)
    # The ELFS panel shows the rounds and what came back from each annotation run.
    ctx = ExecutionContext(
        request_params={
            "dataset_name": dataset.name,
            "panel_id": "p",
            "panel_state": {},
            "params": {"__method__": "on_load", "panel_id": "p", "state": {}},
        },
        executor=Executor(),
    )
    ElfsPanel().on_load(ctx)
    assert "round 1: 30, round 2: 20" in ctx.panel.state.labeling
    assert "| op_round | human | 30 | 1 | 0 | 29 |" in ctx.panel.state.labeling


def test_the_exported_tasks_open_their_images_in_label_studio(dataset, tmp_path):
    # The README's file hand-over, against a real server: a project with the exported config,
    # the tasks imported from labelstudio_tasks.json, and a Local files source storage over
    # <export_dir>/media (not synced). Without that storage the server refuses the images.
    _pipeline(dataset)
    # file names that mean something in a URL query: '&', '#', '+', '%', '?', spaces, accents
    awkward = ["a&b #1.png", "c+d é.png", "50% off?.png"]
    coreset = dataset.match_tags("elfs_coreset")
    renamed = {}
    ids, paths = coreset.values("id")[:3], coreset.values("filepath")[:3]
    for sample_id, path, name in zip(ids, paths, awkward, strict=True):
        copy = tmp_path / "sources" / name
        copy.parent.mkdir(exist_ok=True)
        copy.write_bytes(open(path, "rb").read())
        renamed[sample_id] = str(copy)
    dataset.set_values("filepath", renamed, key_field="id")
    export_dir = tmp_path / "to_label"
    classes = sorted(set(dataset.values("ground_truth.label")))
    elfs.export_coreset(dataset, str(export_dir), formats=("labelstudio",), classes=classes)
    tasks = json.loads((export_dir / "labelstudio_tasks.json").read_text())
    env = {
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(export_dir),
    }
    server = start_label_studio(tmp_path / "label-studio", env=env)
    try:
        config = (export_dir / "labelstudio_config.xml").read_text()
        project = _api(server, "POST", "/api/projects", json={"label_config": config})
        _api(server, "POST", f"/api/projects/{project['id']}/import", json=tasks)
        imported = _tasks(server, project["id"])
        assert len(imported) == len(tasks) == len(dataset.match_tags("elfs_coreset"))
        url = server.url + imported[0]["data"]["image"]
        auth = {"Authorization": f"Token {server.api_key}"}
        assert requests.get(url, headers=auth, timeout=30).status_code == 404  # no storage yet
        storage = {"project": project["id"], "path": str(export_dir / "media"), "title": "media"}
        _api(server, "POST", "/api/storages/localfiles", json=storage)
        by_id = dict(zip(dataset.values("id"), dataset.values("filepath"), strict=True))
        served = set()
        for task in imported:
            image = requests.get(server.url + task["data"]["image"], headers=auth, timeout=30)
            assert image.status_code == 200, (task["data"]["image"], image.status_code)
            source = by_id[task["data"]["sample_id"]]
            assert image.content == open(source, "rb").read(), task["data"]["image"]
            served.add(os.path.basename(source))
        assert set(awkward) <= served
        assert len(_tasks(server, project["id"])) == len(tasks)  # the storage added no task
    finally:
        server.stop()
