"""The README's main job, run as a user would, on a machine without ../shared."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_main_job_default_runs_offline_without_shared_data(tmp_path):
    env = dict(os.environ, FIFTYONE_DATABASE_DIR=str(tmp_path / "db"))
    cmd = [
        sys.executable,
        os.path.join(REPO, "examples", "select_coreset.py"),
        "--workdir",
        str(tmp_path / "work"),
        "--shared-data",
        str(tmp_path / "no-shared" / "cifar10-jpg.tar.gz"),  # ../shared hidden
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "Dataset 'elfs-demo-digits': 1797 images" in out
    assert "selected 180 of 1797 samples" in out
    assert out.count("cluster_") >= 10
    assert "skipped images: 0" in out
    export = tmp_path / "work" / "export" / "elfs-demo-digits-elfs"
    assert len(os.listdir(export / "media")) == 180
    assert (export / "labelstudio_tasks.json").is_file()

    # Idempotent: a second run reuses the dataset and its embeddings.
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reused embeddings: 1797" in again.stdout
