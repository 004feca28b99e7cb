"""Label Studio's REST API, for what FiftyOne's annotation backend does not tell: credentials,
whether the server is reachable and accepts the key, and each task's answers (read here, not
through FiftyOne's importer: that one takes a task's latest annotation even when it is a skip,
and a task's pre-annotation when nobody answered; `fiftyone_elfs.label_studio_answers` says
which annotation counts).

Credentials never appear in messages: URLs are shown without their ``user:password@`` part
(`redact`), an authentication failure's response body is not shown at all (a server can echo
the token there), and other bodies are shown with the key and password masked.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Sequence
from typing import Any

import fiftyone as fo
import requests

from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.label_studio_answers import TaskState, task_state

URL_ENV = "FIFTYONE_LABELSTUDIO_URL"
API_KEY_ENV = "FIFTYONE_LABELSTUDIO_API_KEY"
_TIMEOUT_S = 30
_PAGE_SIZE = 500


_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


def redact(text: str, secrets: Sequence[str | None] = ()) -> str:
    """`text` with the user:password@ part of every URL and each of `secrets` masked."""
    text = _USERINFO.sub("***@", text)
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, "***")
    return text


def url_secrets(url: str) -> list[str]:
    """The user name and password a URL carries (to mask them wherever they appear)."""
    parts = urllib.parse.urlsplit(url)
    return [s for s in (parts.password, parts.username) if s]


def resolve_credentials(url: str | None = None, api_key: str | None = None) -> tuple[str, str]:
    """Label Studio URL and API key: arguments first, then FiftyOne's `FIFTYONE_LABELSTUDIO_*`."""
    backend = fo.annotation_config.backends.get("labelstudio", {})
    url = url or os.environ.get(URL_ENV) or backend.get("url")
    api_key = api_key or os.environ.get(API_KEY_ENV) or backend.get("api_key")
    if not url:
        raise ElfsInputError(
            f"No Label Studio URL. Fix: set {URL_ENV} (e.g. http://localhost:8080) in the "
            "environment or the plugin's secrets, or pass url=...",
            param="url",
        )
    if not api_key:
        raise ElfsInputError(
            f"No Label Studio API key. Fix: set {API_KEY_ENV} to the legacy token shown in Label "
            "Studio under Account & Settings, or pass api_key=...",
            param="api_key",
        )
    return url.rstrip("/"), api_key


def _request(
    method: str, url: str, api_key: str, path: str, params: dict[str, Any], ok: tuple = (200,)
) -> requests.Response:
    """One authenticated request; a status outside `ok` raises an `ElfsInputError`."""
    shown = redact(url)
    try:
        response = requests.request(
            method,
            url + path,
            params=params,
            headers={"Authorization": f"Token {api_key}"},
            timeout=_TIMEOUT_S,
        )
    except requests.RequestException as e:
        raise ElfsInputError(
            f"Cannot reach Label Studio at {shown} ({type(e).__name__}). Fix: start the server "
            f"(`label-studio start`) or correct {URL_ENV}."
        ) from None  # the cause's text repeats the URL with its credentials
    if response.status_code in (401, 403):
        raise ElfsInputError(
            f"Label Studio at {shown} refused the API key (HTTP {response.status_code}; the "
            f"response is not shown, as it may repeat the key). Fix: set {API_KEY_ENV} to your "
            "legacy access token; since Label Studio 1.17 an admin must first enable legacy "
            "tokens (Organization > API Tokens Settings), because FiftyOne authenticates with "
            "a 'Token' header."
        )
    if response.status_code not in ok:
        body = redact(response.text[:200], [api_key, *url_secrets(url)])
        raise ElfsInputError(
            f"Label Studio at {shown} answered HTTP {response.status_code} to {method} {path}: "
            f"{body}"
        )
    return response


def get(url: str, api_key: str, path: str, **params: Any) -> requests.Response:
    """One authenticated GET, turning connection and auth failures into errors with a fix
    (credentials masked: see the module docstring)."""
    return _request("GET", url, api_key, path, params)


def delete_project_by_id(url: str, api_key: str, project_id: int) -> None:
    """Deletes a Label Studio project and its tasks (already gone: nothing to do)."""
    _request("DELETE", url, api_key, f"/api/projects/{project_id}/", {}, ok=(200, 204, 404))


def check_label_studio(url: str | None = None, api_key: str | None = None) -> tuple[str, str]:
    """Checks the SDK is installed and the server accepts the key; returns (url, api_key)."""
    try:
        import label_studio_sdk  # noqa: F401  (FiftyOne's backend imports it lazily)
    except ImportError as e:
        raise ElfsInputError(
            "The Label Studio client (label-studio-sdk) is not installed. Fix: run "
            "`bash scripts/setup_label_studio.sh` (it installs the client FiftyOne needs into "
            "the project's environment)."
        ) from e
    url, api_key = resolve_credentials(url, api_key)
    get(url, api_key, "/api/projects", page_size=1)
    return url, api_key


def task_states(url: str, api_key: str, project_id: int, from_name: str) -> dict[int, TaskState]:
    """Maps each task id of a project to its latest answer in the Choices control `from_name`
    and whether it was skipped (`label_studio_answers.task_state`), reading page by page.

    A page shorter than asked for is not the last one: a server may cap the page size
    (Label Studio's TASK_API_PAGE_SIZE_MAX), and stopping there would read every later task
    as unanswered, which a reload takes for answers withdrawn. So pages are read until the
    `total` the server reports is reached, or, from a server that reports none, until a page
    comes back empty, shorter than the first one, or out of range (HTTP 404).
    """
    states: dict[int, TaskState] = {}
    page, first_page_len = 1, None
    while True:
        params = dict(project=project_id, page=page, page_size=_PAGE_SIZE, fields="all")
        # A 404 on the first page is an error (the project is gone); later, the end of the list.
        ok = (200,) if page == 1 else (200, 404)
        response = _request("GET", url, api_key, "/api/tasks", params, ok=ok)
        if response.status_code == 404:
            return states
        body = response.json()
        tasks = body["tasks"] if isinstance(body, dict) else body
        for task in tasks:
            states[int(task["id"])] = task_state(task, from_name)
        total = body.get("total") if isinstance(body, dict) else None
        first_page_len = len(tasks) if first_page_len is None else first_page_len
        if not tasks or (total is not None and len(states) >= total):
            return states
        if total is None and len(tasks) < first_page_len:
            return states
        page += 1
