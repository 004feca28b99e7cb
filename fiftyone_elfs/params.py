"""The parameters of every operation, each written once: name, type, default, range, help text.

Longer than the ~400 lines aimed at elsewhere on purpose: one table per operation, together, so
that a parameter several operations share (the key, the budget, the seed ...) is one `Param` row
defined once and a reader sees every operation's options in one file. The machinery is at the
top, the tables below it.

Everything else is derived from these tables:

- the checks at the public API boundary, with one message format (`Operation.validate`,
  applied by `public` to each function of `fiftyone_elfs.api`, `export` and `annotation`);
- the Args section of each public function's docstring (`public`);
- the App forms, what an operator's ``execute`` passes to the library and what its ``__call__``
  accepts (`fiftyone_elfs.plugin.forms`), so a form shows the same message as the API.

The API functions keep their own signatures (a reader sees the options in the code); a test
checks that each table's names and defaults equal `inspect.signature` of its function.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from fiftyone_elfs.difficulty.cnn_proxy import ARCHITECTURES, DEFAULT_CNN_EPOCHS, train_cnn_proxy
from fiftyone_elfs.difficulty.contrastive import (
    CONTRASTIVE_METHODS,
    DEFAULT_CONTRASTIVE_EPOCHS,
    train_contrastive_similarity,
)
from fiftyone_elfs.difficulty.training_dynamics import DEFAULT_PROXY_EPOCHS
from fiftyone_elfs.errors import ElfsInputError, input_boundary
from fiftyone_elfs.param_rows import (  # noqa: F401 - re-exported: the types and shared rows
    ADAPT_STEPS,
    BETA,
    BETA_MODE,
    BUDGET,
    BUDGET_COUNT,
    BUDGET_FRACTION,
    CLASSES,
    CLUSTERING,
    EMBEDDINGS_FIELD,
    KEY,
    LABEL_FIELD,
    MODE,
    MODEL,
    N_CLUSTERS,
    NUM_WORKERS,
    PRELABEL_MAP,
    PROXY,
    SEED,
    TEMI_PARAMS,
)
from fiftyone_elfs.param_types import REQUIRED, TYPES, Param, Switch  # noqa: F401 - re-exported
from fiftyone_elfs.progress import failed_bars_closed
from fiftyone_elfs.runs import SCORE_NAMES, SELECTION_SCORES

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Operation:
    """The parameter table of one public function and its operator.

    `items` are `Param` rows and `Switch` groups in form order; `deprecated` maps old keyword
    names to current ones (accepted with a DeprecationWarning by the API and the operators).
    """

    name: str
    items: tuple[Param | Switch, ...]
    deprecated: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def params(self) -> tuple[Param, ...]:
        out: list[Param] = []
        for item in self.items:
            out.extend(item.params if isinstance(item, Switch) else (item,))
        return tuple(out)

    @property
    def switches(self) -> tuple[Switch, ...]:
        return tuple(i for i in self.items if isinstance(i, Switch))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def defaults(self) -> dict[str, Any]:
        """The API default of every parameter that has one."""
        return {p.name: p.default for p in self.params if not p.required}

    def rename_deprecated(self, kwargs: Mapping[str, Any], stacklevel: int = 3) -> dict[str, Any]:
        """`kwargs` with deprecated names replaced by the current ones, warning for each."""
        out = dict(kwargs)
        for old, new in self.deprecated.items():
            if old in out:
                warnings.warn(
                    f"{self.name}: '{old}' is deprecated; use '{new}'.",
                    DeprecationWarning,
                    stacklevel=stacklevel,
                )
                if new in out:
                    raise ElfsInputError(
                        f"Both '{old}' (deprecated) and '{new}' were given. Fix: pass only {new}.",
                        param=new,
                    )
                out[new] = out.pop(old)
        return out

    def validate(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Checks every given parameter and the switches; returns the converted values.

        Raises:
            ElfsInputError: for an unknown name, a bad value or conflicting parameters, with
                the name of the parameter to blame in ``param``.
        """
        unknown = sorted(set(kwargs) - set(self.names))
        if unknown:
            raise ElfsInputError(
                f"{self.name} has no parameter {unknown}. Fix: use only {list(self.names)}."
            )
        values = {name: self.param(name).check(value) for name, value in kwargs.items()}
        for switch in self.switches:
            switch.check(values)
        return values

    def args_doc(self, signature: inspect.Signature | None = None) -> str:
        """The Args section of the function's docstring (of `signature`'s function: its first
        argument and its ``progress`` callback, if it takes them, are described too)."""
        first = next(iter(signature.parameters), "samples") if signature else "samples"
        what = "a FiftyOne dataset." if first == "dataset" else "a FiftyOne dataset or view."
        lines = ["Args:", f"    {first}: {what}"]
        for p in self.params:
            lines.append(f"    {p.doc_line()}")
        if signature is not None and "progress" in signature.parameters:
            lines.append(
                "    progress: a callback (fraction in [0, 1], label) told as the work "
                "advances; None (default) draws a progress bar in the terminal."
            )
        for switch in (s for s in self.switches if len(s.params) > 1):
            names = " and ".join(p.name for p in switch.params)
            rule = "exactly one" if switch.required else "at most one"
            lines.append(f"    ({rule} of {names} may be given.)")
        return "\n".join(lines)


OPERATIONS: dict[str, Operation] = {}


def _register(operation: Operation) -> Operation:
    OPERATIONS[operation.name] = operation
    return operation


def public(operation_name: str) -> Callable[[F], F]:
    """Decorates a public function with its parameter table.

    The wrapper renames deprecated keywords (warning), checks every table parameter before the
    function body runs (`Operation.validate`), passes the converted values on (and `samples`
    through `dataset_io.with_every_field`), and turns the
    array modules' ``ValueError`` into `ElfsInputError` (`errors.input_boundary`). The Args
    section of the docstring is generated from the table.
    """
    operation = OPERATIONS[operation_name]

    def decorate(fn: F) -> F:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            kwargs = operation.rename_deprecated(kwargs)
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError as e:
                raise TypeError(_call_error(fn.__name__, signature, kwargs, e)) from None
            bound.apply_defaults()
            _check_progress(bound.arguments.get("progress"))
            given = {n: v for n, v in bound.arguments.items() if n in operation.names}
            bound.arguments.update(operation.validate(given))
            first = next(iter(bound.arguments))  # samples, or a dataset
            if first in ("samples", "dataset"):
                from fiftyone_elfs.dataset_io import refresh_records, with_every_field

                bound.arguments[first] = with_every_field(bound.arguments[first], first)
                refresh_records(bound.arguments[first])
            with input_boundary(), failed_bars_closed():
                return fn(*bound.args, **bound.kwargs)

        wrapper.__doc__ = _document(fn.__doc__ or "", operation, signature)
        return wrapper  # type: ignore[return-value]

    return decorate


def _call_error(
    name: str, signature: inspect.Signature, kwargs: dict[str, Any], error: TypeError
) -> str:
    """Python's binding error with the function, the closest parameter to a misspelt one, and
    which parameters are keyword-only."""
    import difflib

    parameters = signature.parameters
    unknown = [k for k in kwargs if k not in parameters]
    hint = ""
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(parameters), n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
    positional = [n for n, p in parameters.items() if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    keyword = [n for n, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    return (
        f"{name}(): {error}{hint}. It takes {', '.join(positional)} by position"
        + (f", and by keyword only: {', '.join(keyword)}" if keyword else "")
        + "."
    )


def _check_progress(progress: Any) -> None:
    """Refuses a progress that is not a callable (it failed inside a stage, after work began)."""
    if progress is not None and not callable(progress):
        raise ElfsInputError(
            f"progress must be a function taking (fraction, label), or None; got "
            f"{type(progress).__name__} {progress!r}. Fix: pass e.g. "
            "progress=lambda fraction, label: print(f'{fraction:.0%} {label}'), or leave it "
            "out for a terminal bar.",
            param="progress",
        )


def _document(doc: str, operation: Operation, signature: inspect.Signature) -> str:
    """Inserts the table's Args section before "Returns:" (or at the end)."""
    doc = inspect.cleandoc(doc)
    head, sep, tail = doc.partition("\nReturns:")
    args = operation.args_doc(signature)
    return f"{head.rstrip()}\n\n{args}\n" + (f"\nReturns:{tail}" if sep else "")


def deprecated_alias(fn: F, old_name: str) -> F:
    """`fn` under its old public name, warning on use."""

    @functools.wraps(fn)
    def alias(*args: Any, **kwargs: Any) -> Any:
        warnings.warn(
            f"{old_name} is deprecated; use {fn.__name__}.", DeprecationWarning, stacklevel=2
        )
        return fn(*args, **kwargs)

    alias.__name__ = old_name
    alias.__doc__ = f"Deprecated name of `{fn.__name__}`.\n\n{fn.__doc__ or ''}"
    return alias  # type: ignore[return-value]


def _default(fn: Callable[..., Any], name: str) -> Any:
    """The default of `fn`'s parameter `name`: an algorithm's default, written in its signature."""
    return inspect.signature(fn).parameters[name].default


# =========================================================================== shared rows

PROXY_EPOCHS = Param(
    "epochs",
    "int",
    None,
    min=1,
    optional=True,
    label="Proxy epochs (optional)",
    help=f"Proxy training epochs; None: the default schedule (MLP {DEFAULT_PROXY_EPOCHS}, fewer "
    "on pools so large that they would exceed its work budget, see scaled_proxy_epochs; "
    f"CNN {DEFAULT_CNN_EPOCHS}).",
)
#: The widest small CNN accepted (channels of its first layer; its last has 4x as many): the
#: paper's proxies are 16 to 64 wide. Without a bound, width=10**9 asked torch for 100 GB: a
#: raw allocation error, and widths a large machine could allocate would run for days.
MAX_CNN_WIDTH = 256
CNN_WIDTH = Param(
    "width",
    "int",
    _default(train_cnn_proxy, "width"),
    min=4,
    max=MAX_CNN_WIDTH,
    label="Small CNN width",
    help="Channels of the small CNN's first layer (doubling twice).",
)
#: The largest image sides accepted: an encoder's input (room above timm's largest pretrained
#: sizes, such as SAM's image encoders' 1,024) and the images a network trains on (kept decoded
#: in memory, N x S x S x 3 bytes: 3 MB each at 1,024; the paper trains at 32 to 224). Without
#: a bound, image_size=100000 asked numpy or torch for terabytes: a raw allocation error.
MAX_EMBEDDING_IMAGE_SIZE = 2048
MAX_TRAIN_IMAGE_SIZE = 1024
#: The side images are decoded to for training a network on them (the CNN proxy, SimCLR/MoCo).
TRAIN_IMAGE_SIZE = Param(
    "image_size",
    "int",
    _default(train_cnn_proxy, "image_size"),
    min=8,
    max=MAX_TRAIN_IMAGE_SIZE,
    label="Training image size (px)",
    help="Side the images are decoded to for training.",
)
CNN_PARAMS = Param(
    "cnn_params",
    "dict",
    None,
    optional=True,
    form_prefix="cnn",
    shown_when=("proxy", "cnn"),
    help="Settings of the CNN proxy (proxy='cnn'); unset keys keep their defaults.",
    fields=(
        Param(
            "arch",
            "choice",
            _default(train_cnn_proxy, "arch"),
            choices=ARCHITECTURES,
            noun="CNN architecture",
            widget="dropdown",
            label="CNN",
            help="'small' suits a CPU; 'resnet18' is the paper's, for a GPU.",
        ),
        CNN_WIDTH,
        TRAIN_IMAGE_SIZE,
        Param("batch_size", "int", _default(train_cnn_proxy, "batch_size"), min=1, form=False),
        Param("lr", "float", _default(train_cnn_proxy, "lr"), min=0, min_open=True, form=False),
        Param("num_threads", "int", None, min=1, optional=True, form=False),
    ),
)
SCORE = Param(
    "score",
    "choice",
    "aum",
    choices=SELECTION_SCORES,
    noun="selection score",
    widget="dropdown",
    label="Difficulty score",
    help="aum / forgetting / el2n from the proxy, or contrastive (keeps the lowest).",
)

# =========================================================================== the tables

_register(
    Operation(
        "compute_embeddings",
        (
            KEY,
            MODEL,
            dataclasses.replace(
                EMBEDDINGS_FIELD,
                form=False,
                help="Where to write the embeddings instead of '<key>_embedding'.",
            ),
            Param(
                "image_size",
                "int",
                None,
                min=32,
                max=MAX_EMBEDDING_IMAGE_SIZE,
                optional=True,
                label="Image size (px, optional)",
                help=(
                    "Side the images are resized to for the encoder. Unset: the encoder's own "
                    "(128 for efficientnet-lite0, fast on a CPU; 260 for efficientnet-lite2; a "
                    "timm model's pretrained size)."
                ),
            ),
            ADAPT_STEPS,
            SEED,
            Param("batch_size", "int", 64, min=1, label="Batch size", help="Images per batch."),
            NUM_WORKERS,
            Param(
                "overwrite",
                "bool",
                False,
                label="Recompute existing embeddings",
                help="Recompute every embedding instead of reusing those of the same model.",
            ),
        ),
    )
)

_EMBEDDINGS = OPERATIONS["compute_embeddings"]
_register(
    Operation(
        "embed_shard",
        (
            Param(
                "shard",
                "int",
                REQUIRED,
                min=0,
                label="Shard",
                help="Which part of the images this worker embeds: 0 to n_shards - 1.",
            ),
            Param(
                "n_shards",
                "int",
                REQUIRED,
                min=1,
                label="Shards",
                help="How many parts the images are split into, one delegated operation each.",
            ),
            KEY,
            _EMBEDDINGS.param("model"),
            _EMBEDDINGS.param("image_size"),
            ADAPT_STEPS,
            SEED,
            _EMBEDDINGS.param("batch_size"),
            NUM_WORKERS,
        ),
    )
)

_register(
    Operation(
        "compute_pseudo_labels",
        (KEY, N_CLUSTERS, CLUSTERING, EMBEDDINGS_FIELD, SEED, TEMI_PARAMS),
        deprecated={"method": "clustering"},
    )
)

_register(
    Operation(
        "compute_difficulty",
        (
            KEY,
            EMBEDDINGS_FIELD,
            PROXY,
            CNN_PARAMS,
            PROXY_EPOCHS,
            dataclasses.replace(
                LABEL_FIELD,
                label="Returned labels field (optional)",
                help="A Classification field of labels annotators returned: the proxy trains on "
                "them where they exist and on a linear probe's predictions elsewhere.",
            ),
            SEED,
            NUM_WORKERS,
        ),
    )
)

_register(
    Operation(
        "compute_contrastive_scores",
        (
            KEY,
            Param(
                "epochs",
                "int",
                DEFAULT_CONTRASTIVE_EPOCHS,
                min=1,
                label="Epochs",
                help="Contrastive training epochs.",
            ),
            TRAIN_IMAGE_SIZE,
            dataclasses.replace(CNN_WIDTH, label="CNN width"),
            Param(
                "contrastive_method",
                "choice",
                _default(train_contrastive_similarity, "method"),
                choices=CONTRASTIVE_METHODS,
                noun="contrastive method",
                label="Contrastive method",
                help="SimCLR (in-batch negatives) or MoCo (momentum key encoder, queue).",
            ),
            Param(
                "batch_size",
                "int",
                _default(train_contrastive_similarity, "batch_size"),
                min=2,
                form=False,
                help="Images per step (SimCLR's negatives are the rest of the batch).",
            ),
            SEED,
            NUM_WORKERS,
        ),
        deprecated={"method": "contrastive_method"},
    )
)

_register(
    Operation(
        "select_coreset",
        (
            KEY,
            BUDGET,
            MODE,
            BETA_MODE,
            SCORE,
            SEED,
            Param(
                "tag",
                "str",
                None,
                optional=True,
                label="Tag (optional)",
                help="The tag of the coreset; None: '<key>_coreset'.",
            ),
        ),
    )
)

_register(
    Operation(
        "select_more",
        (
            KEY,
            BUDGET,
            dataclasses.replace(
                LABEL_FIELD, help="Samples already labeled here are never selected again."
            ),
            BETA_MODE,
            dataclasses.replace(
                SCORE,
                default=None,
                optional=True,
                label="Difficulty score (optional)",
                help=f"{SCORE.help} None: the score this key's coreset was selected by, so the "
                "rounds continue its ranking.",
            ),
        ),
    )
)

_register(
    Operation(
        "compute_visualization",
        (
            KEY,
            EMBEDDINGS_FIELD,
            Param(
                "layout_method",
                "choice",
                "umap",
                choices=("umap", "pca"),
                noun="layout method",
                widget="radio",
                label="Layout",
                help="UMAP (neighbourhoods kept) or PCA (fast, linear).",
            ),
            Param(
                "brain_key",
                "identifier",
                None,
                optional=True,
                noun="brain key",
                example="elfs_umap",
                label="Brain key (optional)",
                help="The brain run's key; None: '<key>_umap' (or '<key>_pca').",
            ),
            Param(
                "pca_dims",
                "int",
                50,
                min=2,
                form=False,
                help="Dimensions the embeddings are projected to before UMAP.",
            ),
            SEED,
        ),
        deprecated={"method": "layout_method"},
    )
)

_register(
    Operation(
        "run_pipeline",
        (
            KEY,
            BUDGET,
            MODE,
            BETA_MODE,
            dataclasses.replace(
                SCORE, choices=SCORE_NAMES, help="aum / forgetting / el2n from the proxy."
            ),
            N_CLUSTERS,
            CLUSTERING,
            PROXY,
            CNN_PARAMS,
            PROXY_EPOCHS,
            MODEL,
            ADAPT_STEPS,
            dataclasses.replace(
                EMBEDDINGS_FIELD,
                label="Existing embeddings field (optional)",
                help="Use this vector field and skip the embedding stage.",
            ),
            Param(
                "visualize",
                "bool",
                True,
                label="Embedding plot",
                help="Also lay the embeddings out in 2-D for the Embeddings panel (UMAP).",
            ),
            SEED,
            TEMI_PARAMS,
            NUM_WORKERS,
        ),
        deprecated={"proxy_epochs": "epochs"},
    )
)

_register(
    Operation(
        "export_coreset",
        (
            Param(
                "export_dir",
                "str",
                REQUIRED,
                label="Export folder",
                help="The folder to write; refused if not empty, unless overwrite.",
            ),
            KEY,
            Param(
                "formats",
                "subset",
                ("media", "fiftyone", "labelstudio"),
                choices=("media", "fiftyone", "labelstudio"),
                form_prefix="format",
                choice_labels=(
                    "Media folder + CSV manifest",
                    "FiftyOne dataset",
                    "Label Studio task file",
                ),
                help="What to write: the images with a CSV manifest, a FiftyOne dataset, Label "
                "Studio tasks.",
            ),
            CLASSES,
            PRELABEL_MAP,
            Param(
                "include_pseudo_labels",
                "bool",
                True,
                label="Pre-annotations from prelabel_map",
                help="Attach each task's mapped class (prelabel_map) as a Label Studio "
                "prediction; False: none.",
            ),
            Param(
                "label_studio_prefix",
                "str",
                "/data/local-files/?d=",
                form=False,
                help="URL prefix of the images in the Label Studio tasks (local-files storage).",
            ),
            Param(
                "overwrite",
                "bool",
                False,
                label="Overwrite this exporter's outputs there",
                help="Replace this exporter's earlier outputs in export_dir (nothing else).",
            ),
        ),
    )
)

ANNO_KEY = Param(
    "anno_key",
    "identifier",
    REQUIRED,
    noun="annotation key",
    example="round1",
    label="Annotation key",
    help="Names this annotation run (letters, digits, _), e.g. 'round1'.",
)
_LS_URL = Param(
    "url",
    "str",
    None,
    optional=True,
    form=False,
    help="Label Studio's URL; None: FIFTYONE_LABELSTUDIO_URL (operators: the plugin secret).",
)
_LS_API_KEY = Param(
    "api_key",
    "str",
    None,
    optional=True,
    form=False,
    help="Label Studio API key; None: FIFTYONE_LABELSTUDIO_API_KEY (operators: the secret).",
)

_register(
    Operation(
        "send_to_label_studio",
        (
            ANNO_KEY,
            dataclasses.replace(
                CLASSES,
                default=REQUIRED,
                optional=False,
                label="Classes",
                help="The class names annotators choose from (comma-separated in the form).",
                fix="Pass e.g. classes=['cat', 'dog'].",
            ),
            dataclasses.replace(
                LABEL_FIELD,
                default="ground_truth",
                optional=False,
                label="Label field",
                help="Where the annotators' answers are loaded back.",
            ),
            Param(
                "prelabel_field",
                "str",
                None,
                optional=True,
                label="Pre-annotation field (optional)",
                help="e.g. 'elfs_pseudo_label': each task offers the class its cluster maps to "
                "(prelabel_map, or the class annotators gave its members in earlier rounds).",
            ),
            dataclasses.replace(PRELABEL_MAP, help="{cluster: class} for the pre-annotations."),
            _LS_URL,
            _LS_API_KEY,
            Param(
                "project_name",
                "str",
                None,
                optional=True,
                form=False,
                help="The Label Studio project's name; None: FiftyOne's.",
            ),
            Param(
                "overwrite",
                "bool",
                False,
                label="Let answers replace labels these samples already have",
                help="Allow sending samples that already have a label in label_field.",
            ),
        ),
    )
)

_register(
    Operation(
        "load_from_label_studio",
        (dataclasses.replace(ANNO_KEY, label="Annotation run"), _LS_URL, _LS_API_KEY),
    )
)
