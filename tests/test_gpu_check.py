"""The prepared GPU check (`benchmarks/scale/gpu_check.py`, issue 16) runs where FiftyOne does not.

A lent GPU machine has torch but neither FiftyOne nor MongoDB, and its device time is short: the
script must import only the algorithm modules and run through on the first try. Here it runs on
the CPU against the CPU (tiny sizes), with FiftyOne made unimportable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "benchmarks", "scale", "gpu_check.py")


def test_gpu_check_runs_without_fiftyone_and_reports_every_check(tmp_path):
    out = tmp_path / "gpu_check.jsonl"
    args = [
        "--device", "cpu", "--photos", "24", "--photo-size", "96", "--compare-images", "8",
        "--batch-size", "8", "--encoder-images", "16", "--temi-samples", "600",
        "--temi-clusters", "4", "--temi-epochs", "2", "--proxy-samples", "600", "--out", str(out),
    ]  # fmt: skip
    code = (
        "import runpy, sys\n"
        "sys.modules['fiftyone'] = None  # any import of FiftyOne now fails\n"
        f"sys.argv = {[SCRIPT, *args]!r}\n"
        f"runpy.run_path({SCRIPT!r}, run_name='__main__')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert done.returncode in (0, 1), done.stderr[-3000:]  # 1: a check below its target
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    by_check: dict[str, list[dict]] = {}
    for row in rows:
        by_check.setdefault(row["check"], []).append(row)
    assert set(by_check) == {"machine", "encoder", "embedding_loop", "temi", "mlp_proxy"}
    assert by_check["machine"][0]["device"] == "cpu"
    encoder = by_check["encoder"][0]
    assert encoder["passed"] and encoder["cosine_min"] > 0.9999  # the CPU against itself
    loops = by_check["embedding_loop"]
    assert [r["num_workers"] for r in loops] == ["default", 0]
    assert all(r["workers_used"] == 0 and r["images"] == 24 for r in loops)  # CPU: in-process
    assert all(r["loop_images_per_s"] > 0 and r["ratio"] > 0 for r in loops)
    temi = by_check["temi"][0]
    assert temi["device_ari"] == temi["cpu_ari"] and temi["passed"]  # same device, same seed
    assert by_check["mlp_proxy"][0]["aum_spearman"] > 0.999
    assert done.returncode == (0 if all(r.get("passed", True) for r in rows) else 1)
