"""Selection on hand-made scores: budgets, every edge of double-end pruning, the beta rule, CCS."""

from __future__ import annotations

import numpy as np
import pytest

from fiftyone_elfs.selection import (
    SELECTION_MODES,
    PruneResult,
    ccs_prune,
    ccs_select,
    double_end_prune,
    label_free_beta,
    next_round_prune,
    rank_hardest_first,
    resolve_budget,
    resolve_mode,
)

# Ranked hardest first (low = hard): -1.0 (1), -0.5 (5), 0.0 (7), 0.1 (3), 0.5 (0), 1.0 (6),
# 1.5 (9), 2.0 (2), 2.5 (8), 3.0 (4).
SCORES = np.array([0.5, -1.0, 2.0, 0.1, 3.0, -0.5, 1.0, 0.0, 2.5, 1.5])
ORDER = [1, 5, 7, 3, 0, 6, 9, 2, 8, 4]


# --------------------------------------------------------------------------- resolve_budget


def test_resolve_budget_count_and_fraction():
    assert resolve_budget(100, budget_count=10) == 10
    assert resolve_budget(100, budget_count=np.int64(7)) == 7
    assert resolve_budget(100, budget_count=150) == 150  # pruning then selects everything
    assert resolve_budget(100, budget_fraction=0.25) == 25
    assert resolve_budget(100, budget_fraction=1) == 100
    assert resolve_budget(1000, budget_fraction=0.0125) == round(0.0125 * 1000)
    assert resolve_budget(100, budget_fraction=0.001) == 1  # at least one sample
    assert isinstance(resolve_budget(100, budget_fraction=0.3), int)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "No budget given"),
        ({"budget_count": 10, "budget_fraction": 0.1}, "pass only one"),
        ({"budget_count": 0}, "budget_count must be > 0"),
        ({"budget_count": -5}, "budget_count must be > 0"),
        ({"budget_count": 2.5}, "whole number.*pass budget_fraction instead"),
        ({"budget_count": True}, "whole number"),
        ({"budget_fraction": 0.0}, r"\(0, 1\]"),
        ({"budget_fraction": -0.1}, r"\(0, 1\]"),
        ({"budget_fraction": float("nan")}, r"\(0, 1\]"),
        (
            {"budget_fraction": 1.5},
            r"budget_fraction must be in \(0, 1\]; got 1.5. To select a number of samples, "
            "pass budget_count instead",
        ),
        ({"budget_fraction": "0.5"}, "must be a number"),
    ],
)
def test_resolve_budget_errors_name_problem_and_fix(kwargs, match):
    with pytest.raises(ValueError, match=match):
        resolve_budget(100, **kwargs)


# --------------------------------------------------------------------------- double_end_prune


def test_double_end_window_normal_case():
    result = double_end_prune(SCORES, budget=3, beta=0.2)
    assert isinstance(result, PruneResult)
    assert result.indices.tolist() == [7, 3, 0]  # ranks 2, 3, 4: the 2 hardest are dropped
    assert (result.start, result.stop) == (2, 5)
    assert result.effective_beta == pytest.approx(0.2)
    assert result.notices == []
    assert [int(result.ranks[i]) for i in ORDER] == list(range(10))


def test_beta_zero_keeps_the_hardest():
    result = double_end_prune(SCORES, budget=3, beta=0.0)
    assert result.indices.tolist() == [1, 5, 7] and (result.start, result.stop) == (0, 3)


def test_effective_beta_is_the_fraction_actually_dropped():
    result = double_end_prune(SCORES, budget=3, beta=0.25)  # floor(2.5) = 2 dropped
    assert result.start == 2 and result.effective_beta == pytest.approx(0.2)
    # floor(0.29 * 100) is 29 although 0.29 * 100 == 28.999999999999996 in floating point.
    assert double_end_prune(np.arange(100.0), budget=10, beta=0.29).start == 29
    # a numpy float32 beta is the decimal it prints as: 0.7 cuts 70, not 69 (0.69999999)
    assert double_end_prune(np.arange(100.0), budget=10, beta=np.float32(0.7)).start == 70
    assert ccs_prune(np.arange(100.0), 10, np.float32(0.7)).start == 70


@pytest.mark.parametrize("budget", [10, 15])
def test_budget_at_least_n_selects_all_with_a_notice(budget):
    result = double_end_prune(SCORES, budget=budget, beta=0.3)
    assert result.indices.tolist() == ORDER
    assert (result.start, result.stop, result.effective_beta) == (0, 10, 0.0)
    assert len(result.notices) == 1 and "all 10" in result.notices[0]


def test_window_past_the_easiest_is_shifted_to_end_there():
    result = double_end_prune(SCORES, budget=7, beta=0.5)  # 5 + 7 > 10
    assert result.indices.tolist() == ORDER[3:]
    assert (result.start, result.stop) == (3, 10)
    assert result.effective_beta == pytest.approx(0.3)
    assert len(result.notices) == 1
    assert "shifted" in result.notices[0] and "effective beta = 0.3" in result.notices[0]
    # Exactly fitting (beta + budget/N == 1) is not an edge: no shift, no notice.
    exact = double_end_prune(SCORES, budget=5, beta=0.5)
    assert exact.indices.tolist() == ORDER[5:] and exact.notices == []


def test_hard_is_low_false_reverses_the_ranking():
    result = double_end_prune(SCORES, budget=2, beta=0.1, hard_is_low=False)
    assert result.indices.tolist() == [8, 2]  # 3.0 (4) dropped, then 2.5, 2.0
    assert result.ranks[4] == 0 and result.ranks[1] == 9


def test_ties_are_ordered_by_the_seed_not_by_index():
    """A window inside a tie group (forgetting counts: most samples 0) was a block of the
    stored order, e.g. one or two classes of a dataset imported class by class."""
    tied = np.array([1.0, 0.0, 1.0, 0.0, 1.0])
    result = double_end_prune(tied, budget=5, beta=0.0)
    assert sorted(result.indices[:2].tolist()) == [1, 3]  # the scores still decide first
    assert sorted(result.indices[2:].tolist()) == [0, 2, 4]
    high = double_end_prune(tied, budget=5, beta=0.0, hard_is_low=False)
    assert sorted(high.indices[:3].tolist()) == [0, 2, 4]
    # 3,000 samples stored by class, 2,500 of them tied: the window is spread over the classes
    classes = np.repeat(np.arange(10), 300)
    forgetting = np.zeros(3000)
    forgetting[np.random.default_rng(0).choice(3000, 500, replace=False)] = 3.0
    window = double_end_prune(forgetting, budget=300, beta=0.45, hard_is_low=False, seed=4)
    assert (forgetting[window.indices] == 0).all()
    assert np.bincount(classes[window.indices], minlength=10).min() >= 15  # a block: 0 in 8
    again = double_end_prune(forgetting, budget=300, beta=0.45, hard_is_low=False, seed=4)
    other = double_end_prune(forgetting, budget=300, beta=0.45, hard_is_low=False, seed=5)
    assert np.array_equal(window.indices, again.indices)
    assert not np.array_equal(np.sort(window.indices), np.sort(other.indices))
    rounds = next_round_prune(forgetting, np.isin(np.arange(3000), window.indices), 300, 0.45,
                              hard_is_low=False, seed=4)  # fmt: skip
    assert np.bincount(classes[rounds.indices], minlength=10).min() >= 15
    distinct = np.random.default_rng(1).normal(size=50)  # no ties: the order of the scores
    assert np.array_equal(rank_hardest_first(distinct, seed=9), np.argsort(distinct))


def test_infinite_scores_are_refused_like_nan():
    """CCS put every sample in one stratum (a plain random draw) when one score was inf."""
    scores = np.linspace(0.0, 1.0, 100)
    scores[7] = np.inf
    for prune in (
        lambda: ccs_prune(scores, 10, 0.1, seed=0),
        lambda: double_end_prune(scores, 10, 0.1),
    ):
        with pytest.raises(ValueError, match="NaN or infinite values for 1 sample"):
            prune()


@pytest.mark.parametrize(
    ("scores", "budget", "beta", "match"),
    [
        (SCORES, 0, 0.1, "budget"),
        (SCORES, -3, 0.1, "budget"),
        (SCORES, 2.5, 0.1, "budget"),
        (SCORES, 3, -0.1, r"beta must be in \[0, 1\)"),
        (SCORES, 3, 1.0, r"beta must be in \[0, 1\)"),
        (SCORES, 3, 1.5, r"beta must be in \[0, 1\)"),
        (SCORES, 3, float("nan"), r"beta must be in \[0, 1\)"),
        (np.array([0.1, np.nan, 0.3]), 1, 0.0, "NaN"),
        (np.array([]), 1, 0.0, "non-empty"),
        (np.ones((2, 2)), 1, 0.0, "1-D"),
    ],
)
def test_double_end_prune_errors(scores, budget, beta, match):
    with pytest.raises(ValueError, match=match):
        double_end_prune(scores, budget, beta)


# --------------------------------------------------------------------------- label_free_beta


def test_label_free_beta_trims_a_share_of_the_pruned_from_the_hard_end():
    aum = np.linspace(1.0, 5.0, 100)  # no negative AUM: the budget term decides
    for fraction in (0.1, 0.3, 0.5, 0.7):
        beta, reason = label_free_beta(aum, fraction, hard_share=0.4)
        assert beta == pytest.approx(0.4 * (1 - fraction)) and "hard end" in reason
    betas = [label_free_beta(aum, f)[0] for f in (0.9, 0.7, 0.5, 0.3, 0.1)]
    assert betas == sorted(betas) and betas[0] < betas[-1]  # smaller budget, more trimmed
    assert label_free_beta(aum, 0.5, hard_share=0.0)[0] == 0.0


def test_label_free_beta_drops_at_least_the_negative_aum_share_with_caps():
    aum = np.concatenate([-np.ones(20), np.ones(80)])
    beta, reason = label_free_beta(aum, budget_fraction=0.9, hard_share=0.5)  # trim 0.05 < 0.2
    assert beta == pytest.approx(0.1) and "1 - budget fraction" in reason
    beta, reason = label_free_beta(aum, budget_fraction=0.5, hard_share=0.1)
    assert beta == pytest.approx(0.2) and "20.0%" in reason and "capped" not in reason
    beta, reason = label_free_beta(np.concatenate([-np.ones(70), np.ones(30)]), 0.1)
    assert beta == pytest.approx(0.5) and "max_beta" in reason
    beta, reason = label_free_beta(np.ones(10), 0.1, hard_share=1.0, max_beta=0.95)
    assert beta == pytest.approx(0.9)  # the whole pruned share from the hard end: easiest kept
    assert label_free_beta(np.zeros(10), 0.5, hard_share=0.0)[0] == 0.0  # AUM 0 is not negative


def test_label_free_beta_errors():
    with pytest.raises(ValueError, match="NaN"):
        label_free_beta(np.array([0.1, np.nan]), 0.5)
    with pytest.raises(ValueError, match="budget_fraction"):
        label_free_beta(np.ones(3), 0.0)
    with pytest.raises(ValueError, match="max_beta"):
        label_free_beta(np.ones(3), 0.5, max_beta=1.0)
    with pytest.raises(ValueError, match="hard_share"):
        label_free_beta(np.ones(3), 0.5, hard_share=1.5)


# --------------------------------------------------------------------------- CCS


def test_ccs_bin_quotas_fill_from_the_smallest_bin_up():
    # 4 bins of width 1 over [0, 4]: sizes 1, 2, 10, 20. Budget 12, filled smallest first:
    # 1 (share 3), 2 (share 11 // 3 = 3), 4 (share 9 // 2), 5 (the rest).
    scores = np.concatenate(
        [[0.0], [1.2, 1.5], np.linspace(2.0, 2.9, 10), np.linspace(3.0, 4.0, 20)]
    )
    chosen = ccs_select(scores, budget=12, beta=0.0, n_bins=4)
    counts = np.bincount(np.clip(np.floor(scores[chosen]).astype(int), 0, 3), minlength=4)
    assert counts.tolist() == [1, 2, 4, 5]


def test_ccs_selects_budget_distinct_non_hardest_indices_spread_over_bins():
    rng = np.random.default_rng(0)
    scores = rng.exponential(size=2000)  # skewed: most mass at low scores
    budget, beta, n = 200, 0.1, 2000
    hardest = set(np.argsort(scores, kind="stable")[: int(beta * n)].tolist())
    chosen = ccs_select(scores, budget=budget, beta=beta, seed=0)
    assert len(chosen) == budget == len(set(chosen.tolist()))
    assert not hardest & set(chosen.tolist())
    assert np.array_equal(chosen, np.sort(chosen))
    np.testing.assert_array_equal(chosen, ccs_select(scores, budget, beta, seed=0))
    assert not np.array_equal(chosen, ccs_select(scores, budget, beta, seed=1))

    remaining = np.setdiff1d(np.arange(n), list(hardest))
    lo, hi = scores[remaining].min(), scores[remaining].max()

    def bins(idx: np.ndarray) -> np.ndarray:
        return np.clip(np.floor((scores[idx] - lo) / (hi - lo) * 50).astype(int), 0, 49)

    nonempty = set(bins(remaining).tolist())
    window = double_end_prune(scores, budget, beta).indices
    assert set(bins(chosen).tolist()) == nonempty  # every occupied bin is represented
    assert len(set(bins(window).tolist())) < len(nonempty) / 5
    # The selection spans the whole remaining score range; the window covers a narrow slice.
    ccs_span = np.ptp(scores[chosen]) / (hi - lo)
    assert ccs_span > 0.9 > 0.1 > np.ptp(scores[window]) / (hi - lo)


def test_ccs_edges():
    assert ccs_select(SCORES, budget=10, beta=0.5).tolist() == list(range(10))
    with pytest.warns(UserWarning, match="effective beta"):
        chosen = ccs_select(SCORES, budget=8, beta=0.5)
    assert set(chosen.tolist()) == set(ORDER[2:])
    assert ccs_select(np.ones(20), budget=5, beta=0.2).size == 5  # a constant score is one bin
    hard_high = ccs_select(SCORES, budget=3, beta=0.3, hard_is_low=False)
    assert not {4, 8, 2} & set(hard_high.tolist())
    with pytest.raises(ValueError, match="NaN"):
        ccs_select(np.array([np.nan, 1.0]), 1, 0.0)
    with pytest.raises(ValueError, match="budget"):
        ccs_select(SCORES, 0, 0.0)
    with pytest.raises(ValueError, match="beta"):
        ccs_select(SCORES, 3, 1.0)
    with pytest.raises(ValueError, match="n_bins"):
        ccs_select(SCORES, 3, 0.0, n_bins=0)


# --------------------------------------------------------------------------- next_round_prune


@pytest.mark.parametrize("n,b1,b2", [(1000, 100, 100), (1000, 50, 300), (999, 7, 13)])
def test_rounds_add_up_to_one_selection_with_the_combined_budget(n, b1, b2):
    scores = np.random.default_rng(n + b1).normal(size=n)
    aum = scores + 10  # no negative AUM: the label-free beta keeps the middle window
    beta1, _ = label_free_beta(aum, b1 / n)
    round1 = double_end_prune(scores, b1, beta1)
    excluded = np.zeros(n, dtype=bool)
    excluded[round1.indices] = True
    beta2, _ = label_free_beta(aum, (b1 + b2) / n)
    round2 = next_round_prune(scores, excluded, b2, beta2)
    once = double_end_prune(scores, b1 + b2, beta2)
    assert len(round2.indices) == b2
    assert not excluded[round2.indices].any()
    combined = np.concatenate([round1.indices, round2.indices])
    # Floor rounding of the two windows' starts may shift the union by one rank at most.
    assert len(np.setdiff1d(combined, once.indices)) <= 1
    assert round2.start <= round1.start and round2.stop >= round1.stop  # nested windows


def test_next_round_never_reselects_and_prefers_the_window_centre():
    n = 100
    scores = np.arange(n, dtype=float)  # rank == index
    excluded = np.zeros(n, dtype=bool)
    excluded[[0, 1, 2, 97, 98, 99]] = True  # labeled elsewhere, far outside the window
    result = next_round_prune(scores, excluded, 10, beta=0.4)
    # Window for 6 + 10 = 16 samples is ranks 40..55; all 16 are free, the 10 nearest its
    # centre (47.5) are 43..52.
    assert (result.start, result.stop) == (40, 56)
    assert sorted(result.indices.tolist()) == list(range(43, 53))
    assert result.indices.tolist() == sorted(result.indices.tolist())  # hardest first


def test_next_round_budget_larger_than_what_is_left_takes_the_rest_with_a_notice():
    scores = np.arange(10, dtype=float)
    excluded = np.arange(10) < 7
    result = next_round_prune(scores, excluded, 5, beta=0.0)
    assert sorted(result.indices.tolist()) == [7, 8, 9]
    # one notice, in this round's terms: not the cumulative window's internal budget of 10
    assert result.notices == [
        "The budget (5) is at least the 3 samples not yet selected or labeled: all 3 are selected."
    ]


def test_next_round_errors():
    scores = np.arange(5, dtype=float)
    with pytest.raises(ValueError, match="nothing left to select"):
        next_round_prune(scores, np.ones(5, dtype=bool), 1, beta=0.0)
    with pytest.raises(ValueError, match="one entry per score"):
        next_round_prune(scores, np.zeros(4, dtype=bool), 1, beta=0.0)


def test_ccs_prune_draws_what_ccs_select_draws_and_marks_the_cut():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=500)
    for beta, budget in [(0.0, 50), (0.3, 120), (0.45, 100)]:
        pruned = ccs_prune(scores, budget, beta, seed=4)
        np.testing.assert_array_equal(
            np.sort(pruned.indices), ccs_select(scores, budget, beta, seed=4)
        )
        assert pruned.start == int(np.floor(beta * 500 + 1e-9)) and pruned.stop == 500
        assert np.all(pruned.ranks[pruned.indices] >= pruned.start)  # nothing from the cut
        assert np.all(np.diff(pruned.ranks[pruned.indices]) > 0)  # hardest first
        assert pruned.effective_beta == pruned.start / 500 and not pruned.notices


def test_ccs_prune_never_draws_an_excluded_sample_and_rounds_cover_the_range():
    rng = np.random.default_rng(5)
    scores = rng.uniform(size=1000)
    first = ccs_prune(scores, 100, 0.2, seed=0)
    excluded = np.zeros(1000, dtype=bool)
    excluded[first.indices] = True
    second = ccs_prune(scores, 100, 0.2, excluded=excluded, seed=1)
    assert not excluded[second.indices].any()
    assert np.unique(second.indices).size == 100 and second.start == first.start
    # the second round covers the same range: its scores span most of the un-cut range
    kept = np.sort(scores)[200:]
    assert np.ptp(scores[second.indices]) > 0.9 * np.ptp(kept)


def test_ccs_prune_shrinks_the_cut_when_too_few_are_left_and_says_so():
    scores = np.arange(100, dtype=float)  # low = hard: rank r is sample r
    excluded = np.zeros(100, dtype=bool)
    excluded[60:] = True  # only samples 0..59 are free; beta 0.5 would leave 10 free
    pruned = ccs_prune(scores, 30, 0.5, excluded=excluded)
    assert pruned.start == 30 and pruned.notices and "effective beta = 0.3" in pruned.notices[0]
    np.testing.assert_array_equal(np.sort(pruned.indices), np.arange(30, 60))
    everything = ccs_prune(scores, 70, 0.5, excluded=excluded)
    np.testing.assert_array_equal(np.sort(everything.indices), np.arange(60))
    assert "more than the 60 samples" in everything.notices[0]
    whole = ccs_prune(scores, 100, 0.5)
    assert whole.indices.size == 100 and "all 100 samples are selected" in whole.notices[0]
    with pytest.raises(ValueError, match="nothing left to select"):
        ccs_prune(scores, 5, 0.1, excluded=np.ones(100, dtype=bool))
    with pytest.raises(ValueError, match="one entry per score"):
        ccs_prune(scores, 5, 0.1, excluded=np.ones(3, dtype=bool))


_STRONG = {"level": "strong", "stability": 0.95, "threshold": 0.9}
_WEAK = {"level": "weak", "stability": 0.7, "threshold": 0.9}


@pytest.mark.parametrize(
    "mode, trust, score, used, words",
    [
        ("auto", _STRONG, "aum", "window", "trust is strong (k-means from other starts agrees"),
        ("auto", _WEAK, "aum", "typical", "trust is weak (k-means from other starts agrees"),
        ("auto", None, "forgetting", "ccs", "no pseudo-label trust was recorded"),
        ("auto", {}, "aum", "ccs", "no pseudo-label trust was recorded"),
        ("auto", {"level": "not measured"}, "aum", "ccs", "no pseudo-label trust was recorded"),
        ("auto", _WEAK, "contrastive", "window", "do not depend on the pseudo-labels"),
        ("window", _WEAK, "aum", "window", "as set by the user"),
        ("ccs", _STRONG, "aum", "ccs", "as set by the user"),
        ("typical", _STRONG, "aum", "typical", "as set by the user"),
    ],
)
def test_resolve_mode_follows_the_trust_level_unless_the_user_fixes_it(
    mode, trust, score, used, words
):
    chosen, reason = resolve_mode(mode, trust, score)
    assert chosen == used and words in reason


def test_resolve_mode_refuses_an_unknown_mode_and_the_form_offers_exactly_the_modes():
    from fiftyone_elfs.param_rows import MODE

    with pytest.raises(ValueError, match="mode must be one of"):
        resolve_mode("window-ish", None)
    assert tuple(MODE.choices) == SELECTION_MODES and MODE.default in SELECTION_MODES


def test_resolve_mode_keeps_a_cut_the_user_set_where_typical_would_make_none():
    chosen, reason = resolve_mode("auto", _WEAK, "aum", beta_set=True)
    assert chosen == "ccs" and "a hard-end cut (beta) was set" in reason
    assert resolve_mode("auto", _STRONG, "aum", beta_set=True)[0] == "window"
