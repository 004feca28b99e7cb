"""keep_freed_memory: freed blocks stay in the heap inside, go back to the kernel after."""

from __future__ import annotations

import resource

import numpy as np
import pytest

from fiftyone_elfs import heap

pytestmark = pytest.mark.skipif(
    heap._libc() is None, reason="glibc only: elsewhere keep_freed_memory does nothing"
)

_BLOCK = 64 << 20  # above glibc's largest default mmap threshold (32 MB)


def _faults_per_round(rounds: int = 5) -> float:
    """Minor page faults per allocate-touch-free round of one 64 MB block."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        block = np.empty(_BLOCK, dtype=np.uint8)
        block[::4096] = 1  # touch every page
        del block
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / rounds


def test_freed_blocks_are_reused_inside_and_released_after():
    """Outside, each round maps a fresh block and faults its pages in again (at least 32 with
    2 MB huge pages, which numpy requests for large arrays; 16,384 with 4 KB pages); inside,
    rounds after the first reuse the same pages. Nested use keeps the settings until the
    outermost exit, which restores glibc's behaviour."""
    outside = _faults_per_round()
    assert outside >= 32
    with heap.keep_freed_memory():
        _faults_per_round(1)  # the first block's pages are faulted in once
        assert _faults_per_round() < outside / 10
        with heap.keep_freed_memory():
            assert _faults_per_round() < outside / 10
        assert _faults_per_round() < outside / 10  # the inner exit did not restore
    assert heap._depth == 0
    assert _faults_per_round() > outside / 2
