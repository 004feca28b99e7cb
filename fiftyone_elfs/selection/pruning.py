"""Coreset selection from difficulty scores: budgets, double-end pruning, the label-free beta, CCS.

Arrays in, arrays out; no FiftyOne import. Every function is O(N) memory.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "HARD_END_SHARE",
    "PruneResult",
    "ccs_prune",
    "ccs_select",
    "double_end_prune",
    "label_free_beta",
    "next_round_prune",
    "rank_hardest_first",
    "resolve_budget",
]

_EPS = 1e-9  # absorbs float error in floor(beta * n), e.g. 0.29 * 100 = 28.999999999999996


@dataclass
class PruneResult:
    """A double-end pruning outcome: the selected window of the hardest-first ranking and why."""

    indices: np.ndarray  # selected sample indices, hardest first
    ranks: np.ndarray  # rank of every sample, 0 = hardest
    start: int  # window [start, stop) in the ranking
    stop: int
    effective_beta: float  # fraction of samples dropped at the hard end: start / N
    notices: list[str] = field(default_factory=list)


def resolve_budget(
    n: int, budget_count: int | None = None, budget_fraction: float | None = None
) -> int:
    """Turn exactly one of a sample count or a pool fraction into a sample count (>= 1).

    A count is returned unchanged, even above ``n`` (pruning then selects everything, with a
    notice); a fraction gives ``round(fraction * n)`` (Python rounding), at least 1.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"The pool must hold at least 1 sample; got n={n!r}.")
    if budget_count is None and budget_fraction is None:
        raise ValueError(
            "No budget given. Pass budget_count (a number of samples, e.g. 1000) or "
            "budget_fraction (a share of the pool in (0, 1], e.g. 0.1)."
        )
    if budget_count is not None and budget_fraction is not None:
        raise ValueError(
            f"Both budget_count ({budget_count!r}) and budget_fraction ({budget_fraction!r}) were "
            "given; pass only one of them."
        )
    if budget_count is not None:
        if isinstance(budget_count, bool) or not isinstance(budget_count, numbers.Integral):
            raise ValueError(
                f"budget_count must be a whole number of samples; got {budget_count!r}. "
                "To select a share of the pool, pass budget_fraction instead."
            )
        if budget_count <= 0:
            raise ValueError(
                f"budget_count must be > 0; got {budget_count}. Pass the number of samples to keep."
            )
        return int(budget_count)
    if isinstance(budget_fraction, bool) or not isinstance(budget_fraction, numbers.Real):
        raise ValueError(
            f"budget_fraction must be a number in (0, 1]; got {budget_fraction!r}. To select a "
            "number of samples, pass budget_count instead."
        )
    fraction = float(budget_fraction)
    if not 0.0 < fraction <= 1.0:  # also rejects NaN
        raise ValueError(
            f"budget_fraction must be in (0, 1]; got {budget_fraction!r}. To select a number of "
            "samples, pass budget_count instead."
        )
    return max(1, int(round(fraction * n)))


def _check_scores(scores: np.ndarray) -> np.ndarray:
    """Return scores as a 1-D float64 array of finite values, or raise a ValueError saying why
    (an infinite score made CCS's strata all one: a plain random draw without a word)."""
    s = np.asarray(scores)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(
            f"scores must be a non-empty 1-D array (one per sample); got shape {s.shape}."
        )
    if s.dtype == bool or not np.issubdtype(s.dtype, np.number) or np.iscomplexobj(s):
        raise ValueError(f"scores must be real numbers; got dtype {s.dtype}.")
    s = s.astype(np.float64)
    if not np.isfinite(s).all():
        bad = np.flatnonzero(~np.isfinite(s))
        raise ValueError(
            f"scores contain NaN or infinite values for {bad.size} sample(s) (first: "
            f"{bad[:5].tolist()}). Recompute the difficulty scores, or drop those samples "
            "before pruning."
        )
    return s


def _check_beta(beta: float) -> float:
    """Return beta as a float in [0, 1) or raise a ValueError."""
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not 0.0 <= beta < 1.0:
        raise ValueError(
            f"beta must be in [0, 1) (the fraction of hardest samples to drop); got {beta!r}. "
            "Use 0 to keep the hardest samples, or leave beta unset for the label-free default."
        )
    # a numpy float32 means its shortest decimal: 0.45, not 0.449999988 (which cuts one less)
    return float(str(beta)) if isinstance(beta, np.floating) else float(beta)


def _check_budget(budget: int) -> int:
    """Return budget as an int > 0 or raise a ValueError."""
    if isinstance(budget, bool) or not isinstance(budget, numbers.Integral) or budget <= 0:
        raise ValueError(
            f"budget must be a whole number of samples > 0; got {budget!r}. "
            "Use resolve_budget to turn a fraction of the pool into a count."
        )
    return int(budget)


def rank_hardest_first(scores: np.ndarray, hard_is_low: bool = True, seed: int = 0) -> np.ndarray:
    """Return sample indices ordered hardest first; tied scores in a random order drawn with
    `seed` (reproducible). Why not the index order: a window inside a large tie group (most
    samples are never forgotten, so have a forgetting count of 0) would then be a block of the
    stored order, e.g. one or two classes of a dataset imported class by class."""
    s = _check_scores(scores)
    tie_order = np.random.default_rng([int(seed), 7]).permutation(s.size)
    return np.lexsort((tie_order, s if hard_is_low else -s))


def double_end_prune(
    scores: np.ndarray, budget: int, beta: float, hard_is_low: bool = True, seed: int = 0
) -> PruneResult:
    """ELFS double-end pruning: drop the floor(beta*N) hardest, keep the next ``budget``, drop rest.

    Edges: ``budget >= N`` selects everything (beta ignored) with a notice; a window that would
    run past the easiest sample is shifted to end at it, with a notice giving the effective beta.
    """
    s = _check_scores(scores)
    budget = _check_budget(budget)
    beta = _check_beta(beta)
    n = s.size
    order = rank_hardest_first(s, hard_is_low, seed)
    ranks = np.empty(n, dtype=np.int64)
    ranks[order] = np.arange(n)
    notices: list[str] = []
    if budget >= n:
        start, stop = 0, n
        notices.append(
            f"The budget ({budget}) is at least the number of scored samples ({n}): all {n} "
            "samples are selected and beta is ignored."
        )
    else:
        start = min(math.floor(beta * n + _EPS), n)
        if start + budget > n:
            shifted = n - budget
            notices.append(
                f"beta={beta:g} plus a budget of {budget} of {n} samples would run past the "
                f"easiest sample, so the window was shifted to end at the easiest sample: it "
                f"drops the {shifted} hardest (effective beta = {shifted / n:.4g}) instead of "
                f"{start}."
            )
            start = shifted
        stop = start + budget
    return PruneResult(
        indices=order[start:stop].copy(),
        ranks=ranks,
        start=int(start),
        stop=int(stop),
        effective_beta=start / n,
        notices=notices,
    )


HARD_END_SHARE = 0.5
"""Default share of the pruned samples that ``label_free_beta`` takes from the hard end."""


def label_free_beta(
    aum: np.ndarray,
    budget_fraction: float,
    max_beta: float = 0.5,
    hard_share: float = HARD_END_SHARE,
) -> tuple[float, str]:
    """The default beta without labels: trim both ends of the ranking, more when labels look noisy.

    What: beta = min(max(``hard_share`` * (1 - ``budget_fraction``), noise), ``max_beta``,
    1 - ``budget_fraction``), where noise = the fraction of samples with AUM < 0 (``aum`` may be
    summed or averaged over epochs; only its sign is used).

    Why: the hardest samples by pseudo-label AUM are boundary and mis-clustered images, the
    easiest are redundant copies of cluster prototypes; pruning should take from both ends, and
    the paper's grid-searched beta grows as the budget shrinks (0.4 at 90% pruning on CIFAR-10).
    ``hard_share`` says which part of the pruned samples is taken from the hard end: 0.5 keeps
    the middle window of the ranking. It was tuned on a validation split of CIFAR-10 (never on
    test; ``benchmarks/results/beta-rule-tuning``). Negative AUM (the proxy prefers another
    cluster over the sample's own, Pleiss et al. 2020) marks likely wrong pseudo-labels, so at
    least that many are dropped. ``max_beta`` stops a very noisy clustering from discarding
    most of the data; the window always fits in the pool.

    Limits: it is a tuned default, not an optimum per dataset: with good pseudo-labels and a
    large budget, less trimming can be better. A proxy trained on the embeddings the clusters
    came from fits k-means/TEMI labels almost exactly, so the noise term is usually near 0.
    """
    a = _check_scores(aum)
    if (
        isinstance(budget_fraction, bool)
        or not isinstance(budget_fraction, numbers.Real)
        or not (0.0 < budget_fraction <= 1.0)
    ):
        raise ValueError(f"budget_fraction must be in (0, 1]; got {budget_fraction!r}.")
    if (
        isinstance(max_beta, bool)
        or not isinstance(max_beta, numbers.Real)
        or not (0.0 <= max_beta < 1.0)
    ):
        raise ValueError(f"max_beta must be in [0, 1); got {max_beta!r}.")
    if (
        isinstance(hard_share, bool)
        or not isinstance(hard_share, numbers.Real)
        or not (0.0 <= hard_share <= 1.0)
    ):
        raise ValueError(f"hard_share must be in [0, 1]; got {hard_share!r}.")
    noise = float(np.mean(a < 0))
    room = max(0.0, 1.0 - float(budget_fraction))
    trim = float(hard_share) * room
    wanted = max(trim, noise)
    beta = min(wanted, float(max_beta), room)
    if noise > trim:
        why = (
            f"{noise:.1%} of samples have negative AUM (the proxy prefers another cluster over "
            f"their pseudo-label, so they are likely mislabelled)"
        )
    else:
        why = (
            f"{hard_share:g} of the {room:.1%} pruned are taken from the hard end, the rest from "
            f"the easy end ({noise:.1%} of samples have negative AUM)"
        )
    if beta == wanted:
        cap = ""
    elif beta == float(max_beta) and max_beta <= room:
        cap = f", capped at max_beta={max_beta:g}"
    else:
        cap = f", capped at 1 - budget fraction = {room:.4g} so the window fits"
    return float(beta), f"beta = {beta:.4g}: {why}{cap}."


def ccs_select(
    scores: np.ndarray,
    budget: int,
    beta: float,
    hard_is_low: bool = True,
    n_bins: int = 50,
    seed: int = 0,
) -> np.ndarray:
    """Coverage-centric coreset selection (CCS, Zheng et al. 2023); returns sorted sample indices.

    Drops the floor(beta*N) hardest, splits the remaining score range into ``n_bins`` equal-width
    bins, and fills the budget from the smallest bin up, each bin giving the lesser of its size and
    an even share of what is still needed, drawn uniformly at random inside the bin (``seed``).
    ``budget >= N`` returns every index; if fewer than ``budget`` samples survive the beta cut,
    beta is lowered to N - budget hardest dropped (with a warning).
    """
    pruned = ccs_prune(scores, budget, beta, hard_is_low=hard_is_low, n_bins=n_bins, seed=seed)
    if pruned.notices and pruned.indices.size < pruned.stop:  # the cut had to shrink
        warnings.warn(pruned.notices[0], stacklevel=2)
    return np.sort(pruned.indices)


def _ccs_draw(
    s: np.ndarray, pool: np.ndarray, budget: int, n_bins: int, rng: np.random.Generator
) -> np.ndarray:
    """CCS's strata: ``budget`` of ``pool`` (sorted indices into ``s``), evenly across the score
    range, smallest bins first, uniformly inside a bin; sorted indices."""
    values = s[pool]
    lo, hi = float(values.min()), float(values.max())
    if hi > lo:
        bins = np.floor((values - lo) / (hi - lo) * n_bins).astype(np.int64)
        bins = np.clip(bins, 0, n_bins - 1)  # the maximum falls in the last bin
    else:
        bins = np.zeros(values.size, dtype=np.int64)
    sizes = np.bincount(bins, minlength=n_bins)

    quota = np.zeros(n_bins, dtype=np.int64)
    remaining = budget
    by_size = np.argsort(sizes, kind="stable")
    for i, b in enumerate(by_size):
        share = remaining // (n_bins - i)
        quota[b] = min(int(sizes[b]), share)
        remaining -= quota[b]
    # Integer shares can leave a remainder; hand it to bins that still have samples, largest first.
    for b in by_size[::-1]:
        if remaining == 0:
            break
        extra = min(remaining, int(sizes[b] - quota[b]))
        quota[b] += extra
        remaining -= extra

    chosen = []
    for b in range(n_bins):
        if quota[b]:
            members = pool[bins == b]
            chosen.append(rng.choice(members, size=int(quota[b]), replace=False))
    return np.sort(np.concatenate(chosen)) if chosen else np.empty(0, dtype=np.int64)


def ccs_prune(
    scores: np.ndarray,
    budget: int,
    beta: float,
    hard_is_low: bool = True,
    excluded: np.ndarray | None = None,
    n_bins: int = 50,
    seed: int = 0,
) -> PruneResult:
    """CCS (see ``ccs_select``) as a ``PruneResult``, for coresets and their next rounds.

    What: the floor(beta*N) hardest are cut; ``budget`` samples are drawn by CCS's strata from
    the rest, never one of ``excluded`` (a boolean mask: samples already selected or labeled).
    ``indices`` are hardest first; ``start`` is the cut and ``stop`` = N (the range drawn from).
    Edges, each with a notice: more budget than samples not excluded selects all of them; when
    too few survive the cut, the cut shrinks (the hardest are kept out as long as possible).
    Why: rounds that each draw across the same range add up to a coverage of it, as one
    selection with the combined budget would.
    """
    s = _check_scores(scores)
    budget = _check_budget(budget)
    beta = _check_beta(beta)
    if isinstance(n_bins, bool) or not isinstance(n_bins, numbers.Integral) or n_bins < 1:
        raise ValueError(f"n_bins must be an integer >= 1; got {n_bins!r}.")
    n = s.size
    mask = np.zeros(n, dtype=bool) if excluded is None else np.asarray(excluded, dtype=bool)
    if mask.shape != s.shape:
        raise ValueError(
            f"excluded must be a boolean mask with one entry per score; got shape {mask.shape} "
            f"for {n} scores."
        )
    available = n - int(mask.sum())
    if available == 0:
        raise ValueError(
            "Every scored sample is already selected or labeled, so there is nothing left to "
            "select. Score more samples, or start a new selection with another key."
        )
    order = rank_hardest_first(s, hard_is_low, seed)
    ranks = np.empty(n, dtype=np.int64)
    ranks[order] = np.arange(n)
    notices: list[str] = []
    if budget >= available:
        if available == n:
            notices.append(
                f"The budget ({budget}) is at least the number of scored samples ({n}): all {n} "
                "samples are selected and beta is ignored."
            )
        elif budget > available:
            notices.append(
                f"The budget ({budget}) is more than the {available} samples not yet selected "
                f"or labeled: all {available} are selected and beta is ignored."
            )
        chosen = np.flatnonzero(~mask)
        start = 0
    else:
        start = min(math.floor(beta * n + _EPS), n)
        free_after = np.cumsum(~mask[order][::-1])[::-1]  # free samples at rank >= r
        if (int(free_after[start]) if start < n else 0) < budget:
            shrunk = int(np.flatnonzero(free_after >= budget).max())
            notices.append(
                f"beta={beta:g} leaves fewer than {budget} samples to draw from, so only the "
                f"{shrunk} hardest were cut (effective beta = {shrunk / n:.4g})."
            )
            start = shrunk
        survivors = order[start:]
        pool = np.sort(survivors[~mask[survivors]])
        chosen = _ccs_draw(s, pool, budget, int(n_bins), np.random.default_rng(seed))
    chosen = chosen[np.argsort(ranks[chosen], kind="stable")]
    return PruneResult(
        indices=chosen,
        ranks=ranks,
        start=int(start),
        stop=int(n),
        effective_beta=start / n,
        notices=notices,
    )


def next_round_prune(
    scores: np.ndarray,
    excluded: np.ndarray,
    budget: int,
    beta: float,
    hard_is_low: bool = True,
    seed: int = 0,
) -> PruneResult:
    """The next labeling round: ``budget`` new samples, never one of ``excluded``.

    What: the double-end window is recomputed for the cumulative budget (samples already
    selected or labeled, plus ``budget``) and the new round is the window minus ``excluded``;
    when the window holds more candidates than ``budget`` (samples labeled outside the ranking's
    window were counted), those nearest the window's centre rank are kept.
    Why: rounds then add up to what one selection with the combined budget would have chosen
    (with the label-free rule the windows are nested around the median rank), rather than a
    second, disjoint window of different difficulty. ``indices`` are hardest first; ``start`` and
    ``stop`` describe the cumulative window.
    """
    s = _check_scores(scores)
    budget = _check_budget(budget)
    beta = _check_beta(beta)
    mask = np.asarray(excluded, dtype=bool)
    if mask.shape != s.shape:
        raise ValueError(
            f"excluded must be a boolean mask with one entry per score; got shape {mask.shape} "
            f"for {s.size} scores."
        )
    n = s.size
    available = n - int(mask.sum())
    if available == 0:
        raise ValueError(
            "Every scored sample is already selected or labeled, so there is nothing left to "
            "select. Score more samples, or start a new selection with another key."
        )
    notices: list[str] = []
    if budget >= available:
        notices.append(
            f"The budget ({budget}) is at least the {available} samples not yet selected or "
            f"labeled: all {available} are selected."
        )
        budget = available
    window = double_end_prune(s, int(mask.sum()) + budget, beta, hard_is_low, seed)
    if budget < available:  # else the window is every sample, said above in this round's terms
        notices.extend(window.notices)  # a window shifted to end at the easiest sample
    order = rank_hardest_first(s, hard_is_low, seed)
    in_window = order[window.start : window.stop]
    candidates = in_window[~mask[in_window]]  # at least `budget`: the window holds E + budget
    centre = (window.start + window.stop - 1) / 2.0
    distance = np.abs(window.ranks[candidates] - centre)
    keep = candidates[np.argsort(distance, kind="stable")[:budget]]
    keep = keep[np.argsort(window.ranks[keep], kind="stable")]
    return PruneResult(
        indices=keep,
        ranks=window.ranks,
        start=window.start,
        stop=window.stop,
        effective_beta=window.effective_beta,
        notices=notices,
    )
