"""Label-free pseudo-labels for ELFS: spherical k-means, spectral clustering of the kNN graph
and TEMI deep clustering on embeddings, and their correction by the labels annotators return
(arrays in, arrays out; no FiftyOne).

Names load on first use, so k-means (numpy, faiss) never imports TEMI's torch.
"""

from fiftyone_elfs._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        ".kmeans": ("DEFAULT_KMEANS_TEMPERATURE", "kmeans_pseudo_labels"),
        ".label_merge": ("majority_class_map", "merge_true_labels", "probe_true_labels"),
        ".metrics": ("cluster_accuracy", "hungarian_match"),
        ".neighbors": ("l2_normalize", "nearest_neighbors", "pca_reduce"),
        ".spectral": ("spectral_embedding", "spectral_pseudo_labels"),
        ".temi": ("TEMIClustering",),
        ".trust": (
            "STRONG_TRUST_STABILITY",
            "PseudoLabelTrust",
            "partition_agreement",
            "pseudo_label_trust",
        ),
    },
)
