"""Fingerprints of the values a run wrote, so that a later stage can tell them from values that
came from elsewhere.

A run's scores or pseudo-labels sit in plain sample fields, where FiftyOne's own operations can
replace them without a word: ``merge_samples`` of a dataset that ran the same key overwrites
the values of the samples both hold (matched by filepath) and adds its own. Ranking two
trainings' scores together, or training a proxy on two clusterings' labels as one, means
nothing. So a run records, per field, one 32-bit fingerprint per (sample id, value) pair,
sorted and packed (4 bytes a sample), and a reader checks the pairs it read against them
(`not_written`): a pair a run did not write (another value, or a sample it never saw) is one a
fingerprint almost surely misses (a chance of about N / 2**32 per pair, N the run's samples).

Arrays in, arrays out: no FiftyOne here.
"""

from __future__ import annotations

import base64
import hashlib
import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

_HEX_ID_CHARS = 24  # a FiftyOne sample id: a MongoDB ObjectId, 12 bytes in hex


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: every input bit moves about half the output bits."""
    z = z.astype(np.uint64, copy=True)
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


def _hash_text(texts: Sequence[str]) -> np.ndarray:
    """A 64-bit hash of each text (the same text, the same hash, in any process)."""
    unique, inverse = np.unique(np.asarray(texts, dtype=object).astype(str), return_inverse=True)
    digests = [hashlib.blake2b(t.encode(), digest_size=8).digest() for t in unique]
    return np.frombuffer(b"".join(digests), dtype="<u8")[inverse.reshape(-1)]


def _hash_ids(ids: Sequence[str]) -> np.ndarray:
    """A 64-bit hash of each sample id: ObjectId hex strings are read as bytes at once."""
    ids = [str(i) for i in ids]
    if ids and all(len(i) == _HEX_ID_CHARS for i in ids):
        try:
            words = np.frombuffer(bytes.fromhex("".join(ids)), dtype=">u4").reshape(-1, 3)
        except ValueError:  # not hex: hashed as text below
            pass
        else:
            words = words.astype(np.uint64)
            high = _mix((words[:, 0] << np.uint64(32)) | words[:, 1])
            return _mix(high ^ words[:, 2])
    return _hash_text(ids)


def _hash_numbers(array: np.ndarray) -> np.ndarray:
    floats = array.astype(np.float64) + 0.0  # -0.0 + 0.0 is 0.0
    floats[np.isnan(floats)] = math.nan  # every NaN alike
    return _mix(floats.view(np.uint64))


def _hash_values(values: Sequence[Any]) -> np.ndarray:
    """A 64-bit hash of each value: a number by its float64 bits (3 and 3.0 alike, as MongoDB
    may hand them back), anything else by its text; each value alike whatever its neighbours."""
    array = np.asarray(values)
    if array.ndim == 1 and array.dtype.kind in "iuf":  # numbers only (no bool, no None)
        return _hash_numbers(array)
    items = list(values)
    numeric = np.array(
        [isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_) for v in items],
        dtype=bool,
    )
    out = np.empty(len(items), dtype=np.uint64)
    if numeric.any():
        out[numeric] = _hash_numbers(np.array([items[i] for i in np.flatnonzero(numeric)]))
    if not numeric.all():
        out[~numeric] = _hash_text([str(items[i]) for i in np.flatnonzero(~numeric)])
    return out


def fingerprints(ids: Sequence[str], values: Sequence[Any]) -> np.ndarray:
    """One uint32 per (id, value) pair; `ids` and `values` have the same length."""
    if len(ids) != len(values):
        raise ValueError(f"{len(ids)} ids but {len(values)} values")
    if not len(ids):
        return np.zeros(0, dtype=np.uint32)
    pair = _mix(_hash_ids(ids) ^ _mix(_hash_values(values) + np.uint64(1)))
    return (pair >> np.uint64(32)).astype(np.uint32)


def pack(ids: Sequence[str], values: Sequence[Any]) -> str:
    """The fingerprints of the pairs, sorted, as base64 text (what a run records)."""
    return base64.b64encode(np.sort(fingerprints(ids, values)).astype("<u4").tobytes()).decode()


def unpack(packed: str) -> np.ndarray:
    """The sorted fingerprints `pack` recorded."""
    return np.frombuffer(base64.b64decode(packed), dtype="<u4")


def not_written(ids: Sequence[str], values: Sequence[Any], packed: str) -> np.ndarray:
    """A mask of the (id, value) pairs that are not among those `packed` records."""
    recorded = unpack(packed)
    found = fingerprints(ids, values)
    if not len(recorded):
        return np.ones(len(found), dtype=bool)
    at = np.minimum(np.searchsorted(recorded, found), len(recorded) - 1)
    return recorded[at] != found
