"""keep_freed_memory: freed blocks stay in the heap inside, go back to the kernel after."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from fiftyone_elfs import heap

pytestmark = pytest.mark.skipif(
    heap._libc() is None, reason="glibc only: elsewhere keep_freed_memory does nothing"
)

# Runs in a child process with transparent huge pages disabled (prctl PR_SET_THP_DISABLE), so a
# fresh 64 MB block costs exactly one fault per 4 KB page. With huge pages on, the count ranges
# from 32 to 16,384 a block depending on how many huge pages the kernel has free at that moment,
# which made the comparison below flaky on busy machines.
_MEASURE = textwrap.dedent(
    """
    import ctypes, json, resource
    ctypes.CDLL(None, use_errno=True).prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE
    import numpy as np
    from fiftyone_elfs import heap

    BLOCK = 64 << 20  # above glibc's largest default mmap threshold (32 MB)

    def faults_per_round(rounds=5):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(rounds):
            block = np.empty(BLOCK, dtype=np.uint8)
            block[::4096] = 1  # touch every page
            del block
        return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / rounds

    out = {"outside": faults_per_round()}
    with heap.keep_freed_memory():
        faults_per_round(1)  # the first block's pages are faulted in once
        out["inside"] = faults_per_round()
        with heap.keep_freed_memory():
            out["nested"] = faults_per_round()
        out["after_inner_exit"] = faults_per_round()
    out["depth"] = heap._depth
    out["after"] = faults_per_round()
    print(json.dumps(out))
    """
)


def test_freed_blocks_are_reused_inside_and_released_after():
    """Outside, each round maps a fresh 64 MB block and faults its 16,384 pages in again;
    inside, rounds after the first reuse the same pages. Nested use keeps the settings until
    the outermost exit, which restores glibc's behaviour."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    faults = json.loads(done.stdout.strip().splitlines()[-1])
    pages = (64 << 20) // 4096
    assert faults["outside"] >= 0.9 * pages, faults
    assert faults["inside"] < pages / 10, faults
    assert faults["nested"] < pages / 10, faults
    assert faults["after_inner_exit"] < pages / 10, faults  # the inner exit did not restore
    assert faults["depth"] == 0
    assert faults["after"] >= 0.9 * pages, faults
