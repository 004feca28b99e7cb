"""Runs test code in child processes that can be SIGKILLed, without paying for imports each time.

Importing FiftyOne, torch and the package takes 10-30 s on the shared 2-core test machine, and
the fault-injection suite kills dozens of processes. So one server process imports them once
(touching neither the database nor torch's thread pools, so forking is safe) and forks a child
per request: a separate process, killed for real by `fiftyone_elfs.faults` (``SIGKILL``), with
its own database connection. The server reports how each child ended.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

_SERVER = r"""
import json, os, sys, traceback
import numpy, torch, fiftyone, fiftyone.core.odm  # noqa: F401  (imported once, before forking)
import fiftyone_elfs.api, fiftyone_elfs.export, fiftyone_elfs.stages.record  # noqa: F401
import fiftyone_elfs.difficulty.cnn_proxy, fiftyone_elfs.difficulty.contrastive  # noqa: F401
import fiftyone_elfs.difficulty.training_dynamics, fiftyone_elfs.pseudo_labels.temi  # noqa: F401
import fiftyone_elfs.pseudo_labels.kmeans, fiftyone_elfs.embeddings.encoders  # noqa: F401
import faiss, sklearn.decomposition, timm, torch._dynamo, torch.optim  # noqa: F401  (slow)
assert fiftyone.core.odm.database._client is None, "connected before forking"
out = sys.stdout
print(json.dumps({"ready": True}), file=out, flush=True)
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        with open(request["log"], "a") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
        os.environ.update(request["env"])
        for name in request.get("unset", []):
            os.environ.pop(name, None)
        code = 0
        try:
            exec(compile(request["code"], "<child>", "exec"), {"__name__": "__child__"})
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        result = -os.WTERMSIG(status)
    else:
        result = os.WEXITSTATUS(status)
    print(json.dumps({"status": result, "pid": pid}), file=out, flush=True)
"""


class ForkServer:
    """A pre-imported Python process that runs code in forked children (see the module doc)."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, **(env or {})},
            text=True,
        )
        ready = self.proc.stdout.readline()
        if not ready:
            raise RuntimeError("the fork server did not start")

    def run(
        self, code: str, log: str, env: dict[str, str] | None = None, unset: tuple = ()
    ) -> dict[str, Any]:
        """Runs `code` in a new child; returns {"status": exit code, or -signal, "pid": ...}."""
        request = {"code": code, "log": log, "env": env or {}, "unset": list(unset)}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the fork server died")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
