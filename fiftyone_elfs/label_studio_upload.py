"""FiftyOne's Label Studio backend, uploading the images in batches and cleaning up a failed send.

FiftyOne's backend (`fiftyone.utils.labelstudio`) posts every image of a send in one multipart
request, with all the files open at once, and Label Studio refuses a request with more than
DATA_UPLOAD_MAX_NUMBER_FILES files (100 by default): a coreset over 100 images could not be sent.
`BatchedLabelStudioBackendConfig`, passed to ``samples.annotate(..., config_cls=...)``, builds
FiftyOne's backend with two changes:

- the images go up `MAX_FILES_PER_REQUEST` at a time (each batch's files opened and closed
  together), with the same two requests per batch FiftyOne makes for all of them; the task ids,
  the pre-annotations and the results are then FiftyOne's own. With local-files serving set up
  (``LABEL_STUDIO_LOCAL_FILES_*``: tasks are imported as URLs, not files), FiftyOne's upload runs
  unchanged;
- the class choice is required (``required="true"`` on every ``Choices`` control): FiftyOne's
  config lets an annotator submit a task with no class picked, which Label Studio then shows to
  no one again and ELFS can only count as unusable;
- when the send fails after the project was created, the project is deleted (no empty project
  is left behind), and an HTTP failure is an `ElfsInputError` with the fix.

The run FiftyOne records names FiftyOne's own config class, so it loads, and its results clean
up, exactly like a run sent with ``backend="labelstudio"``, with or without this module.
"""

from __future__ import annotations

import contextlib
import logging
import os
import urllib.parse
from typing import Any
from xml.etree import ElementTree

import fiftyone.utils.labelstudio as fouls
import requests

from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.label_studio import redact, url_secrets

logger = logging.getLogger(__name__)

MAX_FILES_PER_REQUEST = 100  # Label Studio's default DATA_UPLOAD_MAX_NUMBER_FILES

_FIX = (
    "Fix: start Label Studio with a larger limit (e.g. `DATA_UPLOAD_MAX_NUMBER_FILES=1000 "
    "label-studio start`), or let it read the images from disk (no upload at all): start it with "
    "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=<a "
    "folder above the images>, and set the same two variables where you send."
)


class BatchedLabelStudioBackendConfig(fouls.LabelStudioBackendConfig):
    """FiftyOne's Label Studio config, building `BatchedLabelStudioBackend`; stored as
    FiftyOne's own class (see the module docstring)."""

    def __init__(self, name: str, label_schema: Any, **kwargs: Any) -> None:
        # FiftyOne passes the configured backend's `config_cls` along: not a setting to store.
        kwargs.pop("config_cls", None)
        super().__init__(name, label_schema, **kwargs)

    @property
    def cls(self) -> str:
        base = fouls.LabelStudioBackendConfig
        return f"{base.__module__}.{base.__qualname__}"

    def build(self) -> BatchedLabelStudioBackend:
        return BatchedLabelStudioBackend(self)


class BatchedLabelStudioBackend(fouls.LabelStudioBackend):
    """FiftyOne's Label Studio backend, connected to `BatchedLabelStudioAPI`."""

    def _connect_to_api(self) -> BatchedLabelStudioAPI:
        return BatchedLabelStudioAPI(url=self.config.url, api_key=self.config.api_key)


class BatchedLabelStudioAPI(fouls.LabelStudioAnnotationAPI):
    """FiftyOne's Label Studio API, uploading files in batches and deleting the project of a
    failed send."""

    _project_id: int | None = None

    def _init_project(self, config: Any, samples: Any) -> Any:
        project = super()._init_project(config, samples)
        self._project_id = project.id
        # inside upload_samples' clean-up: a refused change deletes the new project
        project.set_params(label_config=require_choices(project.params["label_config"]))
        return project

    def upload_samples(self, samples: Any, anno_key: str, backend: Any) -> Any:
        self._project_id = None
        try:
            return super().upload_samples(samples, anno_key, backend)
        except BaseException as e:  # Ctrl-C too: no half-filled project is left to annotate
            if self._project_id is None:
                raise
            left = self._delete_failed_project()
            if isinstance(e, ElfsInputError):
                raise ElfsInputError(f"{e} {left[0].upper()}{left[1:]}", e.param) from None
            if isinstance(e, requests.HTTPError) and e.response is not None:
                raise _http_error(self.url, self._api_key, e.response, left) from None
            if isinstance(e, requests.RequestException):  # its text repeats the URL
                raise ElfsInputError(
                    f"Lost the connection to Label Studio at {redact(self.url)} while sending "
                    f"({type(e).__name__}); {left}"
                ) from None
            raise

    def _delete_failed_project(self) -> str:
        """Deletes the project of a failed send; says what became of it."""
        try:
            self.delete_project(self._project_id)
        except Exception as e:
            logger.warning("Could not delete Label Studio project %s: %s", self._project_id, e)
            return (
                f"the project this send created (id {self._project_id}) could not be deleted: "
                "delete it in Label Studio."
            )
        return "the project this send created was deleted."

    def _upload_tasks(
        self, project: Any, tasks: list[dict], predictions: dict | None = None
    ) -> dict[int, str]:
        if _serves_local_files(tasks):
            self._import_local_files(project, tasks)
        else:
            for start in range(0, len(tasks), MAX_FILES_PER_REQUEST):
                self._upload_files(project, tasks[start : start + MAX_FILES_PER_REQUEST])
        # From here on as FiftyOne does it: the newest tasks, in upload order, are ours.
        uploaded_ids = project.get_tasks(only_ids=True)[-len(tasks) :]
        if len(uploaded_ids) != len(tasks):
            raise ElfsInputError(
                f"Label Studio made {len(uploaded_ids)} tasks of the {len(tasks)} images "
                f"uploaded to project {project.id}, so they cannot be matched to samples."
            )
        uploaded_tasks = {i: t["source_id"] for i, t in zip(uploaded_ids, tasks, strict=True)}
        if predictions:
            task_of = {sample_id: task_id for task_id, sample_id in uploaded_tasks.items()}
            for label_predictions in predictions.values():
                project.create_predictions(
                    [{"task": task_of[s], "result": p} for s, p in label_predictions.items()]
                )
        return uploaded_tasks

    def _import_local_files(self, project: Any, tasks: list[dict]) -> None:
        """Makes tasks of files Label Studio serves from its local-files root (nothing is
        uploaded), as FiftyOne does but with each path quoted: a '+' read as a space showed
        annotators another sample's image, and '&', '#' or '%' cut the URL (404)."""
        root = os.environ["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"]
        paths = [t[t["media_type"]] for t in tasks]
        project.connect_local_import_storage(
            os.path.dirname(os.path.commonprefix(paths).rstrip("/"))
        )
        self._client.make_request(
            "POST",
            f"/api/projects/{project.id}/import",
            json=[
                {
                    t["media_type"]: "/data/local-files?d="
                    + urllib.parse.quote(os.path.relpath(p, root))
                }
                for t, p in zip(tasks, paths, strict=True)
            ],
        )

    def _upload_files(self, project: Any, tasks: list[dict]) -> None:
        """Uploads one batch's files and makes them tasks (FiftyOne's two requests)."""
        with contextlib.ExitStack() as stack:
            files = [
                (t["source_id"], stack.enter_context(open(t[t["media_type"]], "rb"))) for t in tasks
            ]
            response = self._client.make_request(
                "POST",
                f"/api/projects/{project.id}/import",
                params={"commit_to_project": True},
                files=files,
            )
        self._client.make_request(
            "POST",
            f"/api/projects/{project.id}/reimport",
            json={
                "file_upload_ids": response.json()["file_upload_ids"],
                "files_as_tasks_list": False,
            },
        )


def require_choices(label_config: str) -> str:
    """The labeling config with every ``Choices`` control marked ``required="true"`` (Label
    Studio then refuses to submit a task without a choice)."""
    root = ElementTree.fromstring(label_config)
    for choices in root.iter("Choices"):
        choices.set("required", "true")
    return ElementTree.tostring(root, encoding="unicode")


def _serves_local_files(tasks: list[dict]) -> bool:
    """Whether FiftyOne's upload imports these tasks as local-files URLs (its own test)."""
    root = os.getenv("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")
    enabled = os.getenv("LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED") or ""
    prefix = os.path.commonprefix([t[t["media_type"]] for t in tasks]).rstrip("/")
    return root is not None and enabled.lower() == "true" and root in os.path.dirname(prefix)


def _http_error(url: str, api_key: str, response: requests.Response, left: str) -> ElfsInputError:
    """The error for a request Label Studio refused during a send (credentials masked)."""
    request = response.request
    path = urllib.parse.urlsplit(request.url or "").path
    what = (
        f"Label Studio at {redact(url)} answered HTTP {response.status_code} to "
        f"{request.method} {path}"
    )
    if request.method == "POST" and path.endswith("/import"):
        return ElfsInputError(
            f"{what} while the images were uploaded ({MAX_FILES_PER_REQUEST} per request); "
            f"{left} Label Studio refuses a request carrying more files than its "
            f"DATA_UPLOAD_MAX_NUMBER_FILES setting (100 by default). {_FIX}"
        )
    body = redact(response.text[:200], [api_key, *url_secrets(url)])
    return ElfsInputError(f"{what}; {left} Response: {body}")
