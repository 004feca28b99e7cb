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
        "--device", "cpu", "--photos", "24", "--photo-sizes", "32,96", "--square",
        "--loop-images", "40", "--compare-images", "8", "--pretouch-gb", "0.01",
        "--batch-size", "8", "--encoder-images", "16", "--temi-samples", "600",
        "--temi-clusters", "4", "--temi-epochs", "2", "--temi-min-steps", "40",
        "--proxy-samples", "600", "--out", str(out),
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
    assert set(by_check) == {
        "machine", "pretouch", "encoder", "embedding_loop", "temi", "mlp_proxy"
    }  # fmt: skip
    assert by_check["pretouch"][0]["gb"] == 0.01
    assert by_check["pretouch"][0]["first_gb_per_s"] > 0
    assert by_check["machine"][0]["device"] == "cpu"
    encoder = by_check["encoder"][0]
    assert encoder["passed"] and encoder["cosine_min"] > 0.9999  # the CPU against itself
    assert encoder["loop_cosine_min"] > 0.9999  # the loop's batches, the same on the CPU
    loops = by_check["embedding_loop"]
    assert [(r["photo_px"], r["num_workers"]) for r in loops] == [
        (32, "default"), (32, 0), (96, "default"), (96, 0)
    ]  # fmt: skip
    # the 24 files cycled through to 40 images; CPU: decoded in-process
    assert all(r["workers_used"] == 0 and r["images"] == 40 for r in loops)
    assert all(r["distinct_files"] == 24 and r["square"] for r in loops)
    assert all(r["loop_images_per_s"] > 0 and r["ratio"] > 0 for r in loops)
    # 40 images fit in the loop's first chunk (1,024 rows): no rate after it
    assert all(r["first_chunk_s"] > 0 for r in loops)
    assert all(r["after_first_chunk_images_per_s"] is None for r in loops)
    # the target is judged on the CIFAR-sized photos with the default workers only
    assert ["passed" in r for r in loops] == [True, False, False, False]
    temi = by_check["temi"][0]
    assert temi["min_steps"] == 40  # the tiny run's own minimum, recorded
    assert temi["device_ari"] == temi["cpu_ari"] and temi["passed"]  # same device, same seed
    assert by_check["mlp_proxy"][0]["aum_spearman"] > 0.999
    assert done.returncode == (0 if all(r.get("passed", True) for r in rows) else 1)
