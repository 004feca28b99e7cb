"""A private mongod for the scale benchmarks: FiftyOne's bundled binary on a free local port.

FiftyOne attaches to any database service already running (whatever FIFTYONE_DATABASE_DIR
says), so a benchmark that makes a million-sample dataset must point FIFTYONE_DATABASE_URI at
its own server, in a folder it deletes afterwards (as tests/conftest.py does for the tests).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(db_dir: str) -> tuple[str, subprocess.Popen]:
    """Starts mongod with its data in `db_dir`; returns (URI, process). Set the URI in
    FIFTYONE_DATABASE_URI before importing FiftyOne; terminate the process when done."""
    binary = next(
        os.path.join(p, "fiftyone", "db", "bin", "mongod")
        for p in sys.path
        if os.path.isfile(os.path.join(p, "fiftyone", "db", "bin", "mongod"))
    )
    os.makedirs(db_dir, exist_ok=True)
    port = _free_port()
    args = [binary, "--dbpath", db_dir, "--port", str(port), "--bind_ip", "127.0.0.1"]
    args += ["--nounixsocket", "--logpath", os.path.join(db_dir, "mongod.log")]
    # the benchmark's own RSS is what is measured; ELFS_BENCH_CACHE_GB overrides the 1 GB
    args += ["--wiredTigerCacheSizeGB", os.environ.get("ELFS_BENCH_CACHE_GB", "1")]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mongod exited with {proc.returncode}: see {db_dir}/mongod.log")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return f"mongodb://127.0.0.1:{port}", proc
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("mongod did not answer within 60 s")


def use(db_dir: str) -> subprocess.Popen:
    """Starts a private mongod and points this process's FiftyOne at it (call before importing
    fiftyone)."""
    uri, proc = start(db_dir)
    os.environ.update(
        FIFTYONE_DATABASE_URI=uri,
        FIFTYONE_DATABASE_VALIDATION="false",
        FIFTYONE_DO_NOT_TRACK="true",
    )
    return proc
