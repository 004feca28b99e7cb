"""Ctrl-C on an operator call stops the run, as it stops a library call: the run rolls back and
releases the key before the call raises. It went on in a worker thread: in a script the first
Ctrl-C was swallowed and the call returned its result; in a notebook cell the cell stopped but
the run kept the key's lease (the user's rerun was refused) and wrote its coreset later."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

KEY = "k"

_CALLER = """
import asyncio, os, signal, threading, time
import fiftyone as fo
import fiftyone.operators as foo
import fiftyone_elfs as elfs

dataset = fo.load_dataset({name!r})
ARGS = dict(key="slow", budget_count=8, n_clusters=4, clustering="kmeans",
            embeddings_field="elfs_embedding", epochs=20000, visualize=False)
operator = foo.get_operator("@fiftyone-elfs/elfs/run_elfs_pipeline")

def call():
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a terminal's, a kernel's
    threading.Timer(4.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    started = time.monotonic()
    try:
        operator(dataset, **ARGS)
        print("RETURNED")
    except KeyboardInterrupt:
        print("INTERRUPTED", round(time.monotonic() - started, 1))

if {notebook!r}:
    async def cell():  # an event loop runs in this thread, as in a notebook
        call()
    asyncio.run(cell())
else:
    call()
print("THREADS", sorted(t.name for t in threading.enumerate() if "fiftyone-elfs" in t.name))
dataset.reload()
print("KEYS", sorted(elfs.list_keys(dataset)))
elfs.run_pipeline(dataset, **dict(ARGS, epochs=2))  # at once: the key is free
print("RERUN", len(dataset.match_tags("slow_coreset")))
"""


@pytest.mark.parametrize("notebook", [False, True], ids=["script", "notebook"])
def test_ctrl_c_stops_an_operator_call_and_frees_its_key(ds, notebook):
    code = textwrap.dedent(_CALLER.format(name=ds.name, notebook=notebook))
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)
    assert "RETURNED" not in done.stdout, done.stdout  # 20,000 epochs: about a minute
    assert 4.0 <= float(lines["INTERRUPTED"]) < 60  # stopped at a progress report
    assert lines["THREADS"] == "[]"  # nothing went on in the background
    assert lines["KEYS"] == f"[{KEY!r}]"  # the interrupted run left no stage behind
    assert lines["RERUN"] == "8"
