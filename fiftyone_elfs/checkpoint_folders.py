"""Where long trainings keep their resumable checkpoints on disk, and the removal of the
folders of deleted datasets.

A training of key ``k`` on a dataset writes under
``$ELFS_CACHE_DIR/checkpoints/<dataset id>/<k>`` (default cache ``~/.cache/fiftyone-elfs``).
A finished training removes its file and `delete_key` removes the key's, but a dataset deleted
with an interrupted training left its files behind for good. The cache folder may serve
several FiftyOne databases (a test database, another project's), so a dataset's folder records
which database it belongs to (`DATABASE_MARK`), and `forget_deleted` removes only folders of
the connected database whose dataset is gone; folders written before the record existed are
left alone.
"""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING

from fiftyone_elfs import dataset_io

if TYPE_CHECKING:
    import fiftyone.core.collections as foc

#: The file in a dataset's checkpoint folder naming the database the dataset is in.
DATABASE_MARK = ".elfs-database"


def checkpoints_root() -> str:
    """The folder holding one folder of checkpoints per dataset."""
    root = os.environ.get("ELFS_CACHE_DIR") or os.path.join("~", ".cache", "fiftyone-elfs")
    return os.path.join(os.path.expanduser(root), "checkpoints")


def checkpoint_dir_for(samples: foc.SampleCollection, key: str) -> str:
    """Where a long training of `key` on this dataset keeps its resumable checkpoint.

    ``$ELFS_CACHE_DIR/checkpoints/<dataset id>/<key>`` (default cache
    ``~/.cache/fiftyone-elfs``): the dataset id survives renames, and each key (and each
    training of a key, e.g. ``<key>_contrastive``) has its own folder. Nothing is created.
    """
    return os.path.join(checkpoints_root(), dataset_io.dataset_id(samples), key)


def training_dir_for(samples: foc.SampleCollection, key: str) -> str:
    """`checkpoint_dir_for`, for a training about to write there: the dataset's folder is
    created and marked with the connected database, so that `forget_deleted` can remove it
    once the dataset is gone."""
    folder = checkpoint_dir_for(samples, key)
    dataset_folder = os.path.dirname(folder)
    mark = os.path.join(dataset_folder, DATABASE_MARK)
    if not os.path.exists(mark):
        os.makedirs(dataset_folder, exist_ok=True)
        tmp = f"{mark}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(database_identity())
        os.replace(tmp, mark)
    return folder


def database_identity() -> str:
    """Names the connected FiftyOne database: its name and the id of FiftyOne's own config
    document there (created with the database, so two databases of one name differ)."""
    import fiftyone.core.odm as foo

    foo.get_db_config()  # creates the config document of a new database
    conn = foo.get_db_conn()
    first = conn["config"].find_one({}, {"_id": 1}, sort=[("_id", 1)])
    return f"{conn.name}:{first['_id'] if first else ''}"


def marked_dataset_ids() -> list[str]:
    """The dataset ids whose checkpoint folder is marked with the connected database."""
    root = checkpoints_root()
    if not os.path.isdir(root):
        return []
    identity = database_identity()
    ids = []
    for name in sorted(os.listdir(root)):
        try:
            with open(os.path.join(root, name, DATABASE_MARK)) as f:
                if f.read() == identity:
                    ids.append(name)
        except OSError:
            continue
    return ids


def forget_deleted(listed: list[str], existing: set[str]) -> list[str]:
    """Removes the checkpoint folders of the datasets in `listed` (from `marked_dataset_ids`,
    listed before `existing` was read) that are not in `existing`; returns their ids."""
    gone = [i for i in listed if i not in existing]
    for dataset_id in gone:
        shutil.rmtree(os.path.join(checkpoints_root(), dataset_id), ignore_errors=True)
    return gone
