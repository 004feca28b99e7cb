"""The main job's command line fails fast: a bad flag is refused before anything slow happens,
with status 2, no traceback, and a message naming the flag (not the API argument) and the fix.

Each case runs examples/select_coreset.py in a fresh interpreter and reports which heavy
libraries it had imported when it stopped: syntax and range errors must stop before FiftyOne or
torch is imported, data errors (a missing dataset, more clusters than images) before anything
is computed. The `fiftyone-elfs` command refuses bad options the same way (last section).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN_JOB = os.path.join(REPO, "examples", "select_coreset.py")
PROBE = f"""
import json, runpy, sys
sys.argv = ["select_coreset.py", *sys.argv[1:]]
code = None
try:
    runpy.run_path({MAIN_JOB!r}, run_name="__main__")
except SystemExit as e:
    code = e.code
print(json.dumps({{"code": code, **{{m: m in sys.modules for m in ("fiftyone", "torch")}}}}))
"""


def _run(*args: str, cwd: str | None = None) -> tuple[dict, str]:
    """Runs the main job with `args`; returns (exit code and heavy imports, stderr)."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd or REPO,
    )
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["--budget-fraction", "1.5"],
            ["--budget-fraction: must be a number in (0, 1]; got 1.5", "Fix:", "(--budget-count)"],
        ),
        (["--budget-fraction", "abc"], ["--budget-fraction: must be a number in (0, 1]", "Fix:"]),
        (["--budget-count", "0"], ["--budget-count: must be an integer >= 1; got 0", "Fix:"]),
        (["--clusters", "0"], ["--clusters: must be an integer >= 2; got 0", "Fix: Pass at least"]),
        (["--beta", "1"], ["--beta: must be a number in [0, 1)", "leave out --beta"]),
        (["--key", "my-run"], ["--key: Invalid run key 'my-run'", "Fix: use letters"]),
        (["--clustering", "dbscan"], ["--clustering: invalid choice: 'dbscan'"]),
        (["--model", "resnet50"], ["--model: unknown encoder 'resnet50'", "Fix:", "'timm:<"]),
        (["--model", "timm: "], ["--model: unknown encoder 'timm: '", "efficientnet-lite2"]),
        (["--adapt-steps", "-1"], ["--adapt-steps: must be an integer in [0, 100000]; got -1"]),
        (
            ["--budget-fraction", "0.2", "--budget-count", "10"],
            ["--budget-count: not allowed with argument --budget-fraction"],
        ),
        (["--images-dir", "/nonexistent/images"], ["--images-dir: '/nonexistent/images' is not a"]),
        (["--classes", "cat,,dog"], ["--classes: 'cat,,dog' is not a list", "Fix: pass them"]),
        (["--classes", "cat,cat"], ["--classes: 'cat,cat' is not a list"]),
        (["--source", "cifar10", "--shared-data", "/nonexistent.tar.gz"], ["--source", "Fix:"]),
    ],
)
def test_bad_flags_stop_before_importing_fiftyone_or_torch(args, expected):
    outcome, stderr = _run(*args)
    assert outcome == {"code": 2, "fiftyone": False, "torch": False}, stderr
    assert "Traceback" not in stderr
    for text in expected:
        assert text in stderr, stderr
    for api_name in ("budget_fraction", "budget_count", "n_clusters"):
        assert api_name not in stderr  # the flags' names, not the API's


def test_a_missing_dataset_is_refused_right_after_importing_fiftyone():
    outcome, stderr = _run("--dataset", "no-such-dataset-here")
    assert outcome == {"code": 2, "fiftyone": True, "torch": False}, stderr
    assert "Traceback" not in stderr
    assert "--dataset: no FiftyOne dataset named 'no-such-dataset-here'" in stderr
    assert "Fix:" in stderr


def test_more_clusters_than_images_is_refused_before_computing_embeddings(tmp_path):
    import fiftyone as fo
    from PIL import Image

    folder = tmp_path / "few_images"
    for c in ("a", "b"):
        (folder / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (16, 16), (40 * i, 80, 200 if c == "a" else 20)).save(
                folder / c / f"{i}.png"
            )
    args = ["--images-dir", str(folder), "--clusters", "7", "--workdir", str(tmp_path / "w")]
    outcome, stderr = _run(*args)
    try:
        assert outcome["code"] == 2, stderr
        assert "Traceback" not in stderr
        assert "--clusters=7 is larger than the 6 samples" in stderr and "Fix:" in stderr
        dataset = fo.load_dataset("elfs-few_images")
        assert dataset.get_field("elfs_embedding") is None  # nothing was computed
        assert dataset.list_runs() == []
    finally:
        if fo.dataset_exists("elfs-few_images"):
            fo.delete_dataset("elfs-few_images")


def test_library_messages_are_shown_in_the_flags_words():
    import runpy

    job = runpy.run_path(MAIN_JOB)
    words = job["in_flag_words"]
    assert words("n_clusters=5000 is larger. Fix: pass n_clusters <= 10.") == (
        "--clusters=5000 is larger. Fix: pass --clusters <= 10."
    )
    assert words("Both budget_count=5 and budget_fraction=0.1 were given.") == (
        "Both --budget-count=5 and --budget-fraction=0.1 were given."
    )
    # short names only where they are the parameter, not the word
    assert words("Invalid run key 'a b': Fix: ...") == "Invalid run key 'a b': Fix: ..."
    assert words("beta must be a number (or None). Fix: or leave beta=None.") == (
        "--beta must be a number. Fix: or leave out --beta."
    )


def test_a_folder_whose_dataset_name_is_taken_gets_its_own_dataset_and_keeps_it(tmp_path, capsys):
    """A second checkout's demo folder (or any folder with the same base name) must not be
    refused, nor reuse or change the first folder's dataset or a user's dataset of that name."""
    import runpy

    import fiftyone as fo
    from PIL import Image

    dataset_from_folder = runpy.run_path(MAIN_JOB)["dataset_from_folder"]
    folders = []
    for checkout, shade in (("first", 30), ("second", 200)):
        folder = tmp_path / checkout / "images"
        (folder / "a").mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), (shade, i, 0)).save(folder / "a" / f"{i}.png")
        folders.append(str(folder))
    name = "elfs-name-clash"
    users = fo.Dataset(f"{name}-2")  # a user's own dataset that happens to fit the pattern
    users.add_sample(fo.Sample(filepath=str(tmp_path / "theirs.png")))
    try:
        first = dataset_from_folder(name, folders[0])
        assert first.name == name and "exists" not in capsys.readouterr().out
        second = dataset_from_folder(name, folders[1])
        assert second.name == f"{name}-3"  # not the user's "-2"
        out = capsys.readouterr().out
        assert f"'{name}' exists and was not made from {folders[1]}" in out and "-3" in out
        assert all(p.startswith(folders[1]) for p in second.values("filepath"))
        assert all(p.startswith(folders[0]) for p in first.values("filepath"))
        assert users.values("filepath") == [str(tmp_path / "theirs.png")]
        assert "source_folder" not in users.info
        # each folder finds its own dataset again, without a notice
        assert dataset_from_folder(name, folders[0]).name == name
        assert dataset_from_folder(name, folders[1]).name == f"{name}-3"
        assert capsys.readouterr().out == ""
        assert sorted(n for n in fo.list_datasets() if n.startswith(name)) == [
            name,
            f"{name}-2",
            f"{name}-3",
        ]
    finally:
        for n in (name, f"{name}-2", f"{name}-3"):
            if fo.dataset_exists(n):
                fo.delete_dataset(n)


def test_the_model_flag_takes_every_form_the_library_loads():
    import runpy

    from fiftyone_elfs.embeddings.encoders import DEFAULT_ENCODER, OFFLINE_ENCODERS
    from fiftyone_elfs.param_rows import MODEL, OFFLINE_ENCODER_NAMES

    assert OFFLINE_ENCODER_NAMES == tuple(OFFLINE_ENCODERS) and MODEL.default == DEFAULT_ENCODER
    parser = runpy.run_path(MAIN_JOB)["build_parser"]()
    assert parser.parse_args([]).model == DEFAULT_ENCODER
    for name in (
        *OFFLINE_ENCODER_NAMES,
        "timm:vit_small_patch16_224.dino",
        "zoo:clip-vit-base32-torch",
    ):
        assert parser.parse_args(["--model", name]).model == name


# --------------------------------------------------------------------------- fiftyone-elfs


def _elfs_command(
    *args: str, env: dict | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fiftyone_elfs.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("port", ["70000", "0", "-1", "http"])
def test_the_app_command_refuses_a_port_out_of_range_at_once(port):
    done = _elfs_command("app", "any-dataset", "--port", port)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    error = done.stderr.strip().splitlines()[-1]  # argparse's usage line, then the error
    assert error.startswith("fiftyone-elfs app: error: argument --port: must be a port number")
    assert "1-65535" in error and "Fix:" in error


def test_install_plugin_refuses_a_plugins_dir_it_cannot_use_in_one_line(tmp_path):
    afile = tmp_path / "plugins"
    afile.write_text("not a folder")
    for where, why in ((afile, "it is a file"), (afile / "sub", f"{afile} is a file")):
        done = _elfs_command("install-plugin", "--plugins-dir", str(where))
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith(f"error: cannot use {where} as the plugins directory: {why}.")
        assert "Fix: pass --plugins-dir a folder you can write" in lines[0]
    assert afile.read_text() == "not a folder"
    done = _elfs_command("install-plugin", "--plugins-dir", str(tmp_path / "new"))
    assert done.returncode == 0 and os.path.islink(tmp_path / "new" / "fiftyone-elfs")


def test_ctrl_c_stops_the_app_without_a_traceback(base_dataset):
    """The command says "Press Ctrl+C to stop the App"; doing so ended in a KeyboardInterrupt
    traceback from FiftyOne's session.wait()."""
    import signal
    import socket
    import threading
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    app = subprocess.Popen(
        [sys.executable, "-m", "fiftyone_elfs.cli", "app", base_dataset.name, "--port", port],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},  # each line as it is printed
        # as in a terminal: a background job (CI's) inherits SIGINT ignored, and Python then
        # installs no KeyboardInterrupt handler
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(app.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not any("Press Ctrl+C" in line for line in out) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert any("Press Ctrl+C" in line for line in out), "".join(out)
        os.kill(app.pid, signal.SIGINT)  # Ctrl+C, to the command itself
        deadline = time.monotonic() + 60
        while app.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(1)  # the last lines in flight
    finally:
        if app.poll() is None:  # how long FiftyOne's shutdown takes is not this test's subject
            os.killpg(app.pid, signal.SIGKILL)
    text = "".join(out)
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    assert "App stopped." in text, text


@pytest.fixture(scope="module")
def small_dataset():
    """An empty dataset in the tests' private database, for commands that need one by name."""
    import uuid

    import fiftyone as fo

    dataset = fo.Dataset(f"elfs-cli-{uuid.uuid4().hex[:6]}")
    dataset.persistent = True  # seen by the command's own process
    yield dataset.name
    if fo.dataset_exists(dataset.name):
        fo.delete_dataset(dataset.name)


@pytest.mark.parametrize("given", ["--port", "--port and --address", "default port"])
def test_the_app_command_refuses_a_busy_port_at_once(small_dataset, given):
    """A port already taken gave FiftyOne's server tracebacks, a minute of "Could not connect
    session, trying again", then a ServiceListenTimeout traceback."""
    import socket

    with socket.socket() as taken:  # another program's server, listening
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        args, env = ["app", small_dataset, "--port", port], None
        if given == "--port and --address":
            args += ["--address", "0.0.0.0"]
        elif given == "default port":
            args, env = ["app", small_dataset], {"FIFTYONE_DEFAULT_APP_PORT": port}
        # FiftyOne alone took over a minute to give up; the refusal needs only the imports
        done = _elfs_command(*args, env=env, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output and "Could not connect" not in output, output
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert f"port {port} is already in use" in errors[0], errors[0]
    assert "another FiftyOne App may be running there" in errors[0]
    assert "Fix: pass --port <another>" in errors[0]
    assert "ELFS plugin" not in done.stdout  # refused before installing or starting anything


def test_ctrl_c_while_the_app_starts_stops_it_without_a_traceback(
    small_dataset, monkeypatch, capsys
):
    """Only session.wait() caught the KeyboardInterrupt; Ctrl+C during fo.launch_app (its
    server start can take a minute) ended in a traceback."""
    import socket

    import fiftyone as fo

    from fiftyone_elfs import cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fo, "launch_app", interrupted)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    outcome = {}
    try:
        outcome["status"] = cli.main(["app", small_dataset, "--port", port])
    except KeyboardInterrupt:
        outcome["status"] = "KeyboardInterrupt"
    out = capsys.readouterr().out
    assert outcome["status"] == 0, out
    assert out.rstrip().endswith("App stopped."), out
    assert "Press Ctrl+C" not in out  # no session was made


def test_a_port_serving_a_fiftyone_app_is_left_to_fiftyone_to_connect_to(capsys):
    """fo.launch_app connects to a FiftyOne App server already on the port: not refused."""
    import http.server
    import json
    import threading

    from fiftyone_elfs import cli

    class FiftyOneAnswer(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"version": "1.0"}).encode()
            self.send_response(200 if self.path == "/fiftyone" else 404)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), FiftyOneAnswer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        cli.check_app_port(port, "127.0.0.1")
        assert f"A FiftyOne App already serves port {port}" in capsys.readouterr().out
        FiftyOneAnswer.do_GET = lambda self: self.send_error(404)  # another web server
        with pytest.raises(SystemExit, match=f"port {port} is already in use"):
            cli.check_app_port(port, "127.0.0.1")
    finally:
        server.shutdown()
        server.server_close()


def test_an_ipv6_address_whose_port_is_taken_is_refused_even_by_an_app(monkeypatch):
    """FiftyOne pings an App at http://<address>:<port> without brackets, so it cannot connect
    to one on an IPv6 literal: 'connecting to it' was followed by its tracebacks and retries."""
    import socket

    from fiftyone_elfs import cli

    monkeypatch.setattr(cli, "_serves_fiftyone", lambda host, port: True)
    with socket.socket(socket.AF_INET6) as taken:
        taken.bind(("::1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit, match=f"port {port} is already in use on ::1"):
            cli.check_app_port(port, "::1")
