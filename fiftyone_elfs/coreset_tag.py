"""The coreset as its tag: the view of the samples a key's coreset tagged, and what in that
view its selection run did not choose.

The tag is what users curate in the App (tag a sample by hand, untag one), so exports and
annotation runs follow it. A sample can also carry the tag without this dataset's run having
chosen it: merged in (`merge_samples`, `add_collection`) from a dataset that ran the same key,
or tagged by hand. That is said wherever the tag is used for work (`not_selected_notice`), so
nobody pays for labels of samples they did not mean to send.
"""

from __future__ import annotations

import fiftyone as fo
import fiftyone.core.collections as foc

from fiftyone_elfs import dataset_io, runs
from fiftyone_elfs.errors import ElfsInputError


def coreset_view(samples: foc.SampleCollection, *, key: str = "elfs") -> fo.DatasetView:
    """The samples of `samples` that the coreset of `key` selected."""
    names = runs.validate_key(key)
    dataset = dataset_io.dataset_of(samples)
    config = runs.stage_config(dataset, names, "coreset")
    if config is None:
        raise ElfsInputError(
            f"No coreset has been selected with key '{key}'. Fix: run select_coreset "
            f"(or run_pipeline) with key='{key}' first; existing keys: "
            f"{sorted(runs.list_pipelines(dataset))}.",
            param="key",
        )
    return dataset_io.tagged(samples, config.tag)


def not_selected_ids(samples: foc.SampleCollection, *, key: str = "elfs") -> list[str]:
    """Ids of the samples in the coreset view of `key` that its selection run did not choose
    (tagged by hand, or merged in with the tag from another dataset)."""
    (ids,) = dataset_io.read_columns(coreset_view(samples, key=key), ["id"])
    return _not_chosen(samples, key, ids)


def _not_chosen(samples: foc.SampleCollection, key: str, tagged_ids: list[str]) -> list[str]:
    """Those of `tagged_ids` that the coreset run of `key` did not choose."""
    names = runs.validate_key(key)
    results = runs.stage_results(dataset_io.dataset_of(samples), names, "coreset")
    selected = set(results.selected_ids)
    return [i for i in tagged_ids if i not in selected]


def not_selected_notice(
    samples: foc.SampleCollection, *, key: str = "elfs", tagged_ids: list[str] | None = None
) -> str | None:
    """What to tell a user about to export or send the coreset of `key`: how many tagged
    samples the run did not choose, and how to leave them out; None when there are none.
    `tagged_ids`: the ids of the coreset view, if the caller has read them already."""
    extra = (
        not_selected_ids(samples, key=key)
        if tagged_ids is None
        else _not_chosen(samples, key, tagged_ids)
    )
    if not extra:
        return None
    tag = runs.stage_config(dataset_io.dataset_of(samples), runs.PipelineNames(key), "coreset").tag
    return (
        f"{len(extra)} of the samples tagged '{tag}' were not chosen by the coreset run of key "
        f"'{key}' (tagged by hand, or merged in from another dataset with the tag); they go "
        "with the coreset. To leave them out: "
        f"dataset.select(elfs.not_selected_ids(dataset, key='{key}'))"
        f".untag_samples('{tag}')."
    )
