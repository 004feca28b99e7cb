"""Which selection rule a coreset uses: the difficulty window, CCS, or typical selection.

ELFS's double-end window keeps one slice of the difficulty ranking. That pays when the ranking is
close to the one real labels would give, i.e. when the pseudo-labels track real classes. When
they are weak (arbitrary cuts through a continuum of the embedding), the narrow slice selects
"near an arbitrary cut" and can train a worse model than a random subset. Two wider rules:
CCS (Zheng et al. 2023) keeps the ranking's one robust signal, the likely mislabelled hard end,
and draws the rest across the difficulty range; typical selection (TypiClust, Hacohen et al.
2022; ``fiftyone_elfs.selection.typical``) uses no pseudo-label at all and takes the most
typical sample (densest among its cell's members) of each of budget k-means cells of the
embedding.

``resolve_mode`` turns the user's ``mode`` ("auto", "window", "ccs" or "typical") into the rule
used and a sentence saying why. "auto" reads the label-free trust diagnostic of the
pseudo-labels (``fiftyone_elfs.pseudo_labels.trust``): strong trust, the window (the paper's
rule; not measured here, no offline encoder gives strong trust on the sets tried); weak trust,
typical selection; trust not measured (more clusters than the diagnostic takes, as many
clusters as samples, or pseudo-labels from outside the pipeline), CCS.

Why typical at weak trust, measured on validation data only (tuning pools drawn from the train
images; ``benchmarks/results/selection-rule-tuning`` and ``long-tail-tuning``): against the
previous weak-trust rule (CCS) it was ahead on grayscale digits (+1.4 to +9.8 points at 50-90%
pruning, 10 seeds) and on two long-tailed CIFAR subsets (+0.3 to +2.2, 10 seeds), level on
balanced CIFAR-10 at 30-50% and 90% (linear probe, CNN from scratch, fine-tuning) and behind it
only at 70% on balanced CIFAR-10 (-0.7 and -0.3 points, CNN and fine-tuning, 3 seeds, within
the spread). Against random subsets its mean was above or within 0.4 points at every cell
measured. CCS, the previous rule, was level with random on held-out CIFAR-10 and below it by up
to about 3 points on long-tailed and grayscale sets (7.6 on grayscale digits at 90% pruning).
Held out, after the freeze (``benchmarks/results/cifar10-pool10k-test10k-typical``): on four
small grayscale or long-tailed sets typical selection is ahead of CCS at 90% pruning on three
(+10.9, +5.8, +1.0 points; -0.7 on the fourth) and within 1.2 points of random or above it
everywhere (+3.3 and +4.4 at 90% on the two digit sets); on the CIFAR-10 test pool it is ahead
of CCS on the CNN from scratch at 90% (+0.9, lower bound above zero) and 0.2-0.9 points behind
it at 30-80% on the linear probe and at 50-70% on the CNN, where it is up to 0.8 points below
random in mean. Four fresh validation trees made afterwards (``benchmarks/results/
budget-regime-tuning``: 3-10 classes, balanced or long-tailed, colour or grayscale) put it
between -1.8 and +0.8 points from random (10 seeds each; CCS between -1.7 and +3.1) and showed
no budget-per-class threshold worth a switch. On those trees the member of each cell was then
taken by its typicality inside the cell instead of over the pool (TypiClust's own rule; +0.65
points there); held out, that change was level in mean (+4.4 and +9.4 points over random at 90%
on the digit sets, -0.1 to -1.7 on two long-tailed CIFAR-10 subsets, ``benchmarks/results/
cifar10-pool10k-test10k-incell``). So the sentence for weak trust states that range.
The lever beyond both is better pseudo-labels: handed labels as good as a linear probe fitted
to the true labels (76% right on CIFAR-10), the difficulty rules gained 0.7-2.2 points over
random at 90% pruning; such labels need better features than the offline encoders give (a
self-supervised encoder's, as in the paper).

Arrays and dicts in, strings out; no FiftyOne.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["SELECTION_MODES", "resolve_mode"]

#: The values of ``mode``: "auto" chooses a rule by pseudo-label trust.
SELECTION_MODES = ("auto", "window", "ccs", "typical")

#: What the weak-trust rule was worth on held-out data (README "Benchmark"), said with it.
_WEAK_TRUST_EXPECTATION = (
    "on the image sets measured, coresets chosen this way trained models from about 2 points "
    "worse than random subsets of the same size (long-tailed CIFAR-10 subsets at 70-90% "
    "pruning; CIFAR-10 itself: within about 1 point either way) to 4-9 points better (small "
    "digit sets at 90% pruning, a few images per class); adapting the encoder to these "
    "images first (adapt_steps=300, 22-40 min on 2 CPU cores) moved held-out results by "
    "-0.03 to +0.80 points against the same rule unadapted (CIFAR-10 at 50-90% pruning, "
    "fine-tuning and a CNN trained from scratch), by +0.10 to +1.24 on a long-tailed "
    "colour set, by -0.64 to +0.18 on a grayscale one and by -2.27 to +0.45 on two small "
    "digit sets (behind the unadapted rule at 90% pruning on both); "
    "pseudo-labels closer to the real classes, e.g. from a "
    "self-supervised encoder (model='timm:vit_small_patch16_224.dino', which downloads its "
    "weights once and runs at 224 px, about 18 times the default encoder's time per image on "
    "a CPU; a GPU is used when present), are what would let the difficulty ranking add to this"
)

_RULE_WORDS = {
    "window": "the double-end window (drop the hardest beta, keep the next budget in rank order)",
    "ccs": (
        "coverage-centric strata (drop the hardest beta, then draw the budget evenly across "
        "the difficulty range of the rest)"
    ),
    "typical": (
        "typical selection (the pool split into as many k-means cells of the embedding as "
        "samples to label, the most typical sample of each cell, by its neighbours in the cell; "
        "no pseudo-labels, no difficulty)"
    ),
}


def resolve_mode(
    mode: str, trust: Mapping[str, Any] | None, score: str = "aum", beta_set: bool = False
) -> tuple[str, str]:
    """The rule to use ("window", "ccs" or "typical") for ``mode`` and one sentence saying why.

    Args:
        mode: "window", "ccs" or "typical" (used as given) or "auto".
        trust: the pseudo-label trust figures recorded by the pseudo-labels stage
            (``PseudoLabelTrust.as_dict()``: at least ``level``, ``stability``, ``threshold``),
            or None when none were recorded.
        score: the selection score; "contrastive" does not come from the pseudo-labels, so
            "auto" keeps its ranking (the window with no hard-end cut keeps the lowest).
        beta_set: the user set the hard-end cut (beta); typical selection makes none, so
            "auto" then draws with CCS where it would have chosen typical selection.
    """
    if mode not in SELECTION_MODES:
        raise ValueError(
            f"mode must be one of {SELECTION_MODES}; got {mode!r}. Use 'auto' to let the "
            "pseudo-label trust decide."
        )
    if mode != "auto":
        return mode, f"{_RULE_WORDS[mode]}, as set by the user"
    if score == "contrastive":
        return "window", (
            "contrastive scores do not depend on the pseudo-labels, so their ranking is used "
            "as it is (the lowest similarities are kept)"
        )
    if not trust or trust.get("level") not in ("strong", "weak"):
        why = (
            f"pseudo-label trust was not measured ({trust['reason']})"
            if trust and trust.get("reason")
            else "no pseudo-label trust was recorded (pseudo-labels from outside the pipeline, "
            "more than the diagnostic's cluster limit, or as many clusters as samples)"
        )
        return "ccs", f"{why}, so the rule that needs only the scores: {_RULE_WORDS['ccs']}"
    figures = (
        f"k-means from other starts agrees with the pseudo-labels on "
        f"{float(trust['stability']):.0%} of samples, strong at >= {float(trust['threshold']):.0%}"
    )
    if trust["level"] == "strong":
        return "window", f"pseudo-label trust is strong ({figures}): {_RULE_WORDS['window']}"
    if beta_set:
        return "ccs", (
            f"pseudo-label trust is weak ({figures}) and a hard-end cut (beta) was set, which "
            f"typical selection (the weak-trust rule) does not make, so: {_RULE_WORDS['ccs']}"
        )
    return "typical", (
        f"pseudo-label trust is weak ({figures}), so the coreset does not rest on them: "
        f"{_RULE_WORDS['typical']}; {_WEAK_TRUST_EXPECTATION}"
    )
