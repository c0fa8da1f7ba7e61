"""See inside a network: Grad-CAM, Grad-CAM++, LIME, occlusion, integrated gradients,
intermediate activations and filter patterns.

Example:
    >>> import vislab.runs, vislab.explain  # doctest: +SKIP
    >>> loaded = vislab.runs.load("imagenet:efficientnet_lite0")  # doctest: +SKIP
    >>> result = vislab.explain.explain(loaded.model, loaded.preprocessing, image,
    ...                                 method="gradcam", class_names=loaded.class_names)  # doctest: +SKIP
    >>> vislab.explain.save_overlay(result, image, "cat_gradcam.png")  # doctest: +SKIP
"""

from vislab.explain.activations import ActivationGrid, activations, save_activations
from vislab.explain.explainers import explain, explain_files, explain_samples, save_overlay
from vislab.explain.base import METHODS, Explanation
from vislab.explain.filters import FilterGrid, filter_grid, save_filter_grid
from vislab.explain.targets import NoFeatureMapError, find_target_layer, layer_names

__all__ = [
    "METHODS",
    "ActivationGrid",
    "Explanation",
    "FilterGrid",
    "NoFeatureMapError",
    "activations",
    "explain",
    "explain_files",
    "explain_samples",
    "filter_grid",
    "find_target_layer",
    "layer_names",
    "save_activations",
    "save_filter_grid",
    "save_overlay",
]
