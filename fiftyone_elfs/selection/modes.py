"""Which selection rule a coreset uses: the difficulty window or coverage-centric strata (CCS).

ELFS's double-end window keeps one slice of the difficulty ranking. That pays when the ranking is
close to the one real labels would give, i.e. when the pseudo-labels track real classes. When
they are weak (arbitrary cuts through a continuum of the embedding), the narrow slice selects
"near an arbitrary cut" and can train a worse model than a random subset; a wider draw that
covers the whole range of difficulty left after the hard-end cut (CCS, Zheng et al. 2023) keeps
the ranking's one robust signal, the likely mislabelled hard end, and otherwise covers the pool.

``resolve_mode`` turns the user's ``mode`` ("auto", "window" or "ccs") into the rule used and a
sentence saying why. "auto" reads the label-free trust diagnostic of the pseudo-labels
(``fiftyone_elfs.pseudo_labels.trust``): strong trust, the window; weak or unknown trust, CCS.
Measured on validation data only (``benchmarks/results/selection-rule-tuning``): on CIFAR-10
features, whose trust is weak, CCS was never behind the window (linear probe, 5 seeds) and
ahead of it and of random at 90% pruning when a CNN is trained from scratch (+1.2 points over
random, 5 seeds); the window at strong trust follows the paper and is not measured here. On
held-out data (CIFAR-10's test split, ``benchmarks/results/cifar10-pool10k-test10k``) the
weak-trust rule was level with random instead (within about half a point in mean on the linear
probe, the CNN from scratch and fine-tuning), and on long-tailed and grayscale sets below it
by up to about 3 points (7.6 on grayscale digits at 90% pruning), so the sentence for weak trust
says so: a user deciding how much to pay for labels should not expect more than a random
subset gives. It also names the lever: handed pseudo-labels as good as a linear probe fitted to
the true labels (76% right on CIFAR-10, validation only), the same rule gained 0.7-2.2 points
over random at 90% pruning, and such labels need better features than the offline encoders
give (a self-supervised encoder's, as in the paper).

Arrays and dicts in, strings out; no FiftyOne.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["SELECTION_MODES", "resolve_mode"]

#: The values of ``mode``: "auto" chooses between the two rules by pseudo-label trust.
SELECTION_MODES = ("auto", "window", "ccs")

#: What the weak-trust rule was worth on held-out data (README "Benchmark"), said with the rule.
_WEAK_TRUST_EXPECTATION = (
    "on held-out CIFAR-10 data, coresets chosen this way trained models about as good as "
    "random subsets of the same size (and worse on some long-tailed and grayscale image sets "
    "at 70-90% pruning); pseudo-labels closer to the real classes are what would change this, "
    "e.g. from a self-supervised encoder (model='timm:vit_small_patch16_224.dino', which "
    "downloads its weights once)"
)

_RULE_WORDS = {
    "window": "the double-end window (drop the hardest beta, keep the next budget in rank order)",
    "ccs": (
        "coverage-centric strata (drop the hardest beta, then draw the budget evenly across "
        "the difficulty range of the rest)"
    ),
}


def resolve_mode(mode: str, trust: Mapping[str, Any] | None, score: str = "aum") -> tuple[str, str]:
    """The rule to use ("window" or "ccs") for ``mode`` and one sentence saying why.

    Args:
        mode: "window" or "ccs" (used as given) or "auto".
        trust: the pseudo-label trust figures recorded by the pseudo-labels stage
            (``PseudoLabelTrust.as_dict()``: at least ``level``, ``stability``, ``threshold``),
            or None when none were recorded.
        score: the selection score; "contrastive" does not come from the pseudo-labels, so
            "auto" keeps its ranking (the window with no hard-end cut keeps the lowest).
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
        return "ccs", (
            f"no pseudo-label trust was recorded (pseudo-labels from outside the pipeline, or "
            f"more than the diagnostic's cluster limit), so the safer rule: {_RULE_WORDS['ccs']}"
        )
    figures = (
        f"k-means from other starts agrees with the pseudo-labels on "
        f"{float(trust['stability']):.0%} of samples, strong at >= {float(trust['threshold']):.0%}"
    )
    if trust["level"] == "strong":
        return "window", f"pseudo-label trust is strong ({figures}): {_RULE_WORDS['window']}"
    return "ccs", (
        f"pseudo-label trust is weak ({figures}): {_RULE_WORDS['ccs']}; {_WEAK_TRUST_EXPECTATION}"
    )
