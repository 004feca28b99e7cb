"""Start and stop a real, local Label Studio server for tests (no fixtures here; conftest wraps it).

The server runs from its own virtualenv (scripts/setup_label_studio.sh). A cold start on a fresh
data dir spends ~100 s in database migrations, so the first start builds a template data dir
under `.label-studio/template` (git-ignored) and every later start copies it into a fresh dir
under the caller's `workdir` (~12 s): tests never share state, and the user, organization and
token persist in the template, which is why the credentials are module constants.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
LABEL_STUDIO_VENV = Path(os.environ.get("ELFS_LABEL_STUDIO_VENV", REPO / ".label-studio-venv"))
LABEL_STUDIO_BIN = LABEL_STUDIO_VENV / "bin" / "label-studio"
CACHE_DIR = REPO / ".label-studio"
TEMPLATE_DIR = CACHE_DIR / "template"
# Written into the template; a template made with other credentials or another server is rebuilt.
TEMPLATE_KEY_FILE = "elfs-template.json"

USERNAME = "elfs-admin@example.com"
PASSWORD = "Elfs-Passw0rd-123"
# The legacy `Token` key FiftyOne's SDK client sends; Label Studio ignores it unless > 5 chars.
API_TOKEN = "fiftyoneelfs0123456789abcdef"
HEALTH_TIMEOUT_S = 360.0


@dataclass
class LabelStudioServer:
    """A running Label Studio process and what a test needs to talk to it."""

    url: str
    api_key: str
    username: str
    password: str
    process: subprocess.Popen
    data_dir: Path
    log_path: Path

    def stop(self) -> None:
        """Stops the server's whole process group (SIGTERM, then SIGKILL); safe to call twice."""
        _stop_process_group(self.process)


def available() -> bool:
    """Whether the server virtualenv exists, so a fixture can skip with a hint, not fail."""
    return LABEL_STUDIO_BIN.is_file()


def start_label_studio(
    workdir: Path, port: int | None = None, env: Mapping[str, str] | None = None
) -> LabelStudioServer:
    """Starts a server on a copy of the cached template data dir (built first if missing).

    `env` adds server settings, e.g. LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED and
    LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT for local-files mode. Returns once `/health` answers
    and a legacy `Token` request is accepted; the caller must call `stop()`.
    """
    if not available():
        raise RuntimeError(
            f"Label Studio is not installed at {LABEL_STUDIO_BIN}. "
            "Fix: bash scripts/setup_label_studio.sh"
        )
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    template = _ensure_template(workdir)
    data_dir = Path(tempfile.mkdtemp(prefix="label-studio-data-", dir=workdir))
    shutil.copytree(template, data_dir, dirs_exist_ok=True)
    return _start(data_dir, port, env)


def _template_key() -> dict[str, str]:
    """What the template depends on: the installed server version and the credentials."""
    stamp = LABEL_STUDIO_VENV / ".fiftyone-elfs-label-studio"
    version = stamp.read_text().strip() if stamp.is_file() else "unknown"
    return {"label_studio": version, "username": USERNAME, "password": PASSWORD, "token": API_TOKEN}


def _template_ok() -> bool:
    """Whether a complete template for the current server and credentials exists."""
    try:
        return json.loads((TEMPLATE_DIR / TEMPLATE_KEY_FILE).read_text()) == _template_key()
    except (OSError, ValueError):
        return False


def _ensure_template(workdir: Path) -> Path:
    """Returns the template data dir, building it once with a cold start if needed.

    A file lock serializes parallel test processes; the copy is written under a temporary name
    and renamed, so an interrupted build never leaves a half template behind.
    """
    if _template_ok():
        return TEMPLATE_DIR
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / "template.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _template_ok():  # another process built it while this one waited
            return TEMPLATE_DIR
        cold_dir = Path(tempfile.mkdtemp(prefix="label-studio-cold-", dir=workdir))
        server = _start(cold_dir, None, None)
        server.stop()
        (cold_dir / TEMPLATE_KEY_FILE).write_text(json.dumps(_template_key()))
        tmp = Path(tempfile.mkdtemp(prefix="template.tmp-", dir=CACHE_DIR))
        try:
            shutil.copytree(cold_dir, tmp, dirs_exist_ok=True)
            if TEMPLATE_DIR.exists():  # stale: other credentials or another server version
                old = CACHE_DIR / f"template.old-{os.getpid()}"
                TEMPLATE_DIR.rename(old)
                shutil.rmtree(old, ignore_errors=True)
            tmp.rename(TEMPLATE_DIR)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # only left if the rename did not happen
        shutil.rmtree(cold_dir, ignore_errors=True)
    return TEMPLATE_DIR


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_env(data_dir: Path, extra: Mapping[str, str] | None) -> dict[str, str]:
    """The server's environment: ours, minus anything that would steer it elsewhere."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LABEL_STUDIO_", "HEARTEX_"))
        and k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "DJANGO_SETTINGS_MODULE"}
        and k not in {"HOST", "PORT", "USERNAME", "PASSWORD", "USER_TOKEN"}  # read as fallbacks
    }
    env.update(
        LABEL_STUDIO_BASE_DATA_DIR=str(data_dir),
        LABEL_STUDIO_USERNAME=USERNAME,
        LABEL_STUDIO_PASSWORD=PASSWORD,
        LABEL_STUDIO_USER_TOKEN=API_TOKEN,
        LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
        LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true",
        LATEST_VERSION_CHECK="false",  # else it asks pypi.org for the latest release on start
        DJANGO_DB="sqlite",
    )
    env.update(extra or {})
    return env


def _start(
    data_dir: Path, port: int | None, extra_env: Mapping[str, str] | None
) -> LabelStudioServer:
    """Starts the server on `data_dir`, waits for health and checks that Token auth works."""
    port = port or _free_port()
    log_path = data_dir.parent / f"{data_dir.name}.log"
    # --internal-host is the bind address (default 0.0.0.0). --host only sets the URL prefix of
    # generated links and is ignored without http://, so it is left out: links stay relative.
    args = [str(LABEL_STUDIO_BIN), "start", "--no-browser", "--internal-host", "127.0.0.1"]
    args += ["--port", str(port)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_server_env(data_dir, extra_env),
            cwd=data_dir,
            start_new_session=True,
        )
    atexit.register(_stop_process_group, process)  # a safety net if the caller never stops it
    server = LabelStudioServer(
        url=f"http://127.0.0.1:{port}",
        api_key=API_TOKEN,
        username=USERNAME,
        password=PASSWORD,
        process=process,
        data_dir=data_dir,
        log_path=log_path,
    )
    try:
        _wait_for_health(server, HEALTH_TIMEOUT_S)
        _ensure_token_auth(server)
    except BaseException:
        server.stop()
        raise
    return server


def _log_tail(path: Path, lines: int = 40) -> str:
    """The last lines of the server log, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_for_health(server: LabelStudioServer, timeout: float) -> None:
    """Polls `/health` until it answers 200; raises with the log tail if the server died or hung."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"Label Studio exited with {server.process.returncode} before it was ready; "
                f"log {server.log_path}:\n{_log_tail(server.log_path)}"
            )
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{server.url}/health", timeout=5).status_code == 200:
                return
        # Label Studio silently moves to the next port when ours was taken meanwhile.
        if b"is in use" in server.log_path.read_bytes():
            raise RuntimeError(f"port of {server.url} was taken; log {server.log_path}")
        time.sleep(1)
    raise RuntimeError(
        f"Label Studio did not answer {server.url}/health within {timeout:.0f} s; "
        f"log {server.log_path}:\n{_log_tail(server.log_path)}"
    )


def _token_works(server: LabelStudioServer) -> bool:
    """Whether the legacy `Authorization: Token <key>` header (what FiftyOne sends) is accepted."""
    r = requests.get(
        f"{server.url}/api/projects",
        headers={"Authorization": f"Token {server.api_key}"},
        timeout=30,
    )
    return r.status_code == 200


def _enable_legacy_tokens(server: LabelStudioServer) -> None:
    """Turns on legacy Token auth for the organization: session login, then POST /api/jwt/settings.

    New organizations in Label Studio >= 1.20 reject legacy tokens (401) unless
    LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN was set when the organization was created.
    """
    s = requests.Session()
    login = f"{server.url}/user/login/"
    s.get(login, timeout=30)  # sets the csrftoken cookie
    r = s.post(
        login,
        data={
            "email": server.username,
            "password": server.password,
            "csrfmiddlewaretoken": s.cookies.get("csrftoken", ""),
        },
        headers={"Referer": login},
        allow_redirects=False,
        timeout=30,
    )
    if r.status_code != 302:
        raise RuntimeError(f"Label Studio login as {server.username} failed: HTTP {r.status_code}")
    r = s.post(
        f"{server.url}/api/jwt/settings",
        json={"api_tokens_enabled": True, "legacy_api_tokens_enabled": True},
        headers={"X-CSRFToken": s.cookies.get("csrftoken", ""), "Referer": server.url + "/"},
        timeout=30,
    )
    if r.status_code != 200:
        raise RuntimeError(f"enabling legacy tokens failed: HTTP {r.status_code} {r.text[:200]}")


def _ensure_token_auth(server: LabelStudioServer) -> None:
    """Makes sure FiftyOne's Token auth works, enabling legacy tokens once if it does not."""
    if _token_works(server):
        return
    _enable_legacy_tokens(server)
    if not _token_works(server):
        raise RuntimeError(
            f"Label Studio at {server.url} rejects 'Authorization: Token {server.api_key}' even "
            f"after enabling legacy tokens; delete {TEMPLATE_DIR} to rebuild the data dir template "
            f"(log {server.log_path})"
        )


def _stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process group (the server exits in ~1 s), SIGKILL after 20 s."""
    if process.poll() is not None:  # already stopped and reaped: its pid may be reused by now
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    # Children that outlived the leader (none expected) still share its group id.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
