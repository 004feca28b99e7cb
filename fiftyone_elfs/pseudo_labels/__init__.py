"""Label-free pseudo-labels for ELFS: spherical k-means and TEMI deep clustering on embeddings,
and their correction by the labels annotators return."""

from .kmeans import DEFAULT_KMEANS_TEMPERATURE, kmeans_pseudo_labels
from .label_merge import majority_class_map, merge_true_labels, probe_true_labels
from .metrics import cluster_accuracy, hungarian_match
from .neighbors import l2_normalize, nearest_neighbors, pca_reduce
from .temi import TEMIClustering

__all__ = [
    "DEFAULT_KMEANS_TEMPERATURE",
    "TEMIClustering",
    "cluster_accuracy",
    "hungarian_match",
    "kmeans_pseudo_labels",
    "l2_normalize",
    "majority_class_map",
    "merge_true_labels",
    "nearest_neighbors",
    "pca_reduce",
    "probe_true_labels",
]
