"""The parameter rows several operations share (`Param` and `Switch` rows; the types are in
`fiftyone_elfs.param_types`).

Split from `fiftyone_elfs.params` (which imports them back, with the tables) because this module
imports nothing heavy: the main job's command line checks its flags with these rows before it
imports FiftyOne or torch, so a bad flag is refused in a fraction of a second with the message
the API would give.
"""

from __future__ import annotations

from fiftyone_elfs.param_types import Param, Switch

KEY = Param(
    "key",
    "identifier",
    "elfs",
    noun="run key",
    example="elfs' or 'elfs_round2",
    label="Run key",
    help="Names this selection's fields, tag, saved view and runs (letters, digits, _).",
)
#: The largest seed: faiss takes a signed 32-bit seed, and the stages derive seeds a little
#: above the one given (the labeling round, the trust diagnostic's restarts).
MAX_SEED = 2**31 - 2**16
SEED = Param(
    "seed",
    "int",
    0,
    min=0,
    max=MAX_SEED,
    label="Random seed",
    help="Same samples and seed, same result (a view that reorders the samples is read in "
    "sample-id order, so its order does not matter).",
    fix="pass a seed in that range, e.g. 0 or a date such as 20241205",
)
#: The encoders that ship with the package and work offline (= the keys of
#: `embeddings.encoders.OFFLINE_ENCODERS`, tested); "timm:<name>" and "zoo:<name>" download.
OFFLINE_ENCODER_NAMES = ("efficientnet-lite0", "efficientnet-lite0-prehead", "efficientnet-lite2")
#: Prefixes of the encoders loaded by name from timm or FiftyOne's model zoo.
ENCODER_PREFIXES = ("timm:", "zoo:")
MODEL = Param(
    "model",
    "str",
    OFFLINE_ENCODER_NAMES[0],  # = embeddings.encoders.DEFAULT_ENCODER (tested)
    label="Encoder",
    help=(
        "'efficientnet-lite0' (offline), 'efficientnet-lite2' (offline, optional extra lite2), "
        "'timm:<name>' or 'zoo:<FiftyOne zoo model>'."
    ),
)

#: The most adaptation steps accepted (hours on a GPU; a typo's 10**9 is refused at once).
MAX_ADAPT_STEPS = 100_000
ADAPT_STEPS = Param(
    "adapt_steps",
    "int",
    0,  # = embeddings.pool_adaptation off; SUGGESTED_STEPS is 300 (tested)
    min=0,
    max=MAX_ADAPT_STEPS,
    label="Adapt the encoder to these images (steps)",
    help=(
        "0: the offline encoder as shipped. N > 0: first fine-tune its last stages on these "
        "images, no labels needed (SimCLR, N steps of 128 images; the seed sets the draw), "
        "then embed with it. 300 steps made pseudo-labels 51 -> 61% right on CIFAR-10, 81 -> "
        "91% on digits, and cost 22-40 min on 2 CPU cores whatever the dataset's size."
    ),
)


def is_encoder_name(name: object) -> bool:
    """Whether `name` has a form `load_encoder` (or the zoo path) accepts: an offline encoder's
    name or a non-empty name after 'timm:' / 'zoo:'. Whether it loads is checked when it does."""
    if not isinstance(name, str):
        return False
    key = name.strip()
    return key in OFFLINE_ENCODER_NAMES or any(
        key.startswith(p) and key[len(p) :].strip() for p in ENCODER_PREFIXES
    )


#: A Classification field of labels annotators returned (each operation says what it does with it).
LABEL_FIELD = Param("label_field", "str", None, optional=True, label="Label field (optional)")
#: The class names annotators choose from in Label Studio (export, send).
CLASSES = Param(
    "classes",
    "str_list",
    None,
    optional=True,
    label="Classes (optional)",
    help="The class names annotators choose from in Label Studio (comma-separated in "
    "the form); None: they type the class as free text.",
    fix="Pass e.g. classes=['cat', 'dog'], or None for a free-text answer.",
)
#: {cluster: class}: each task's pre-annotation is its cluster's class (export, send).
PRELABEL_MAP = Param(
    "prelabel_map",
    "dict",
    None,
    optional=True,
    form=False,
    help="{cluster: class}: pre-annotate each task with its cluster's class (needs "
    "classes); clusters left out, and every task without a map, get none.",
)
EMBEDDINGS_FIELD = Param(
    "embeddings_field",
    "str",
    None,
    optional=True,
    label="Embeddings field (optional)",
    help="An existing vector field to use instead of '<key>_embedding'.",
)
NUM_WORKERS = Param(
    "num_workers",
    "int",
    None,
    min=0,
    optional=True,
    form=False,
    help=(
        "Processes decoding images (0: in this process). Default: none on a CPU (the model "
        "uses every core), one per core but one (at most 32) when a GPU runs the model. "
        "Immediate App runs decode in the App's process."
    ),
)
N_CLUSTERS = Param(
    "n_clusters",
    "int",
    10,
    min=2,
    label="Number of clusters",
    help="Pseudo-classes; typically the number of classes you expect.",
    fix="Pass at least 2: typically the number of classes you expect, e.g. 10.",
)
CLUSTERING = Param(
    "clustering",
    "choice",
    "temi",
    choices=("temi", "kmeans", "spectral"),
    noun="clustering method",
    widget="radio",
    label="Clustering",
    help=(
        "TEMI deep clustering, k-means (fastest) or spectral clustering of the "
        "nearest-neighbour graph (fast; closest to the classes on CIFAR-10 validation data)."
    ),
)
TEMI_PARAMS = Param(
    "temi_params",
    "dict",
    None,
    optional=True,
    form=False,
    help="Extra arguments of TEMIClustering, e.g. {'n_heads': 4, 'epochs': 30}; only with "
    "clustering='temi'. On small data the epochs are raised to reach min_steps optimiser steps "
    "(500; logged, and recorded as the run's epochs); {'min_steps': None} keeps them.",
)
PROXY = Param(
    "proxy",
    "choice",
    "mlp",
    choices=("mlp", "cnn"),
    noun="proxy",
    widget="radio",
    label="Proxy model",
    help="An MLP on the embeddings (fast) or a CNN trained on the images (the paper's).",
)
BUDGET_FRACTION = Param(
    "budget_fraction",
    "float",
    None,
    min=0,
    min_open=True,
    max=1,
    optional=True,
    suggestion=0.1,
    label="Fraction of samples to label",
    help="The budget as a share of the pool, in (0, 1].",
    fix="Use a fraction in (0, 1], e.g. 0.1, or give the budget as a count (budget_count).",
)
BUDGET_COUNT = Param(
    "budget_count",
    "int",
    None,
    min=1,
    optional=True,
    suggestion=100,
    label="Number of samples to label",
    help="The budget as a number of samples; the whole pool or more selects everything.",
    fix="Pass the number of samples to select, e.g. 100, or a share (budget_fraction).",
)
BUDGET = Switch(
    "budget_mode",
    "Budget as",
    (("fraction", BUDGET_FRACTION), ("count", BUDGET_COUNT)),
    required=True,
    noun="budget",
)
BETA = Param(
    "beta",
    "float",
    None,
    min=0,
    max=1,
    max_open=True,
    optional=True,
    suggestion=0.1,
    label="Beta",
    help="Share of the hardest samples dropped, in [0, 1); None: the label-free rule.",
    fix="Pass e.g. beta=0.1, or leave beta=None for the label-free default.",
)
MODE = Param(
    "mode",
    "choice",
    "auto",
    choices=("auto", "window", "ccs", "typical"),  # = selection.modes.SELECTION_MODES (tested)
    noun="selection mode",
    widget="radio",
    label="Selection rule",
    help=(
        "auto: the difficulty window when the pseudo-labels look trustworthy, typical "
        "selection (the most typical sample of each of budget k-means cells of the embeddings) "
        "when they do not; or one rule, fixed: window, CCS (the budget drawn evenly across the "
        "difficulty range) or typical (needs only the key's embeddings, no scores)."
    ),
)
BETA_MODE = Switch(
    "beta_mode",
    "Hard-end cut (beta)",
    (("label-free", None), ("manual", BETA)),
    help="Label-free: estimated from how noisy the pseudo-labels look.",
)
