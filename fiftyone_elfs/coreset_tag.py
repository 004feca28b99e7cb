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


def outside_view_notice(
    samples: foc.SampleCollection, *, key: str = "elfs", n_in_view: int | None = None
) -> str | None:
    """What to tell a user about to export the coreset of `key` from a view that holds only part
    of it (the App's current view is the export form's default target): how many of the tagged
    samples are left out, and how to take them all; None when the view holds them all.
    `n_in_view`: the number of tagged samples in `samples`, if the caller has counted them."""
    dataset = dataset_io.dataset_of(samples)
    if samples is dataset:
        return None
    tag = runs.stage_config(dataset, runs.PipelineNames(key), "coreset").tag
    if n_in_view is None:
        n_in_view = dataset_io.count(dataset_io.tagged(samples, tag))
    n_all = dataset_io.count(dataset_io.tagged(dataset, tag))
    if n_in_view >= n_all:
        return None
    return (
        f"This view holds {n_in_view} of the {n_all} samples tagged '{tag}' (the coreset of key "
        f"'{key}'): only those {n_in_view} are exported. To export the whole coreset, export "
        "from the dataset (in the App, the target 'Entire dataset')."
    )


def empty_coreset_error(samples: foc.SampleCollection, key: str) -> ElfsInputError:
    """Why `samples` holds no sample of the coreset of `key`, and the fix: the tag was removed
    from every sample, or the view holds another round's selection (which `export_coreset`
    does not take: a round after the first goes to annotators through Label Studio, or as
    FiftyOne's own export of its saved view)."""
    names = runs.PipelineNames(key)
    dataset = dataset_io.dataset_of(samples)
    tag = runs.stage_config(dataset, names, "coreset").tag
    if not dataset_io.has_tag(dataset, tag):
        return ElfsInputError(
            f"No sample of the dataset carries the coreset tag '{tag}' of key '{key}' (removed "
            "since the selection?). Fix: tag the run's selection again, dataset.select("
            f"dataset.load_run_results('{names.run_key('coreset')}').selected_ids)"
            f".tag_samples('{tag}'), or run select_coreset again."
        )
    prefix = names.round_tag(0)[:-1]  # every round's tag: "<key>_round<n>"
    rounds = sorted(t for t in dataset_io.distinct_values(samples, "tags") if t.startswith(prefix))
    if rounds:
        return ElfsInputError(
            f"This view holds the selection of a later round of key '{key}' (tags {rounds}), "
            "and export_coreset exports the coreset only (round 1, tag "
            f"'{tag}'). Fix: send that round with elfs.send_to_label_studio(view, ...), or "
            "export its images with FiftyOne: view.export(export_dir, "
            "dataset_type=fo.types.ImageDirectory)."
        )
    return ElfsInputError(
        f"The coreset of key '{key}' has no sample in this view. Fix: export from the dataset "
        f"or a view that contains the samples tagged '{tag}'."
    )
