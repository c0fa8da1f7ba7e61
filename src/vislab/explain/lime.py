"""LIME (Ribeiro et al.) over scikit-image superpixels, as seed 000 uses ``lime_image``.

The image is cut into superpixels (by default quickshift with seed 000's settings, or SLIC where
quickshift finds fewer than :data:`MIN_SUPERPIXELS`, as on images under about 128 px);
LIME switches random sets of them off, watches the class probability and fits a
linear model whose weights say how much each superpixel helps (+) or hurts (-).

Example:
    >>> import torch
    >>> from vislab.models import create_model
    >>> from vislab.data.preprocess import Preprocessing
    >>> model = create_model("seed_cnn2", num_classes=2, input_size=(32, 32)).eval()
    >>> pre = Preprocessing(input_size=(3, 32, 32))
    >>> image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    >>> heat, mask = lime_explain(model, pre, image, target=1, num_samples=50, segmentation="slic")
    >>> heat.shape, mask.shape
    ((32, 32), (32, 32))
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from vislab.core.errors import ConfigError
from vislab.explain.base import heatmap_to_image, model_device, probabilities

SEGMENTATIONS = ("quickshift", "slic")
# Fewer regions than this and LIME has almost nothing to switch off: quickshift with seed 000's settings
# (kernel_size=4) finds 1 to 4 on a 28 to 64 px image, while SLIC finds 30 or more at any size.
MIN_SUPERPIXELS = 10
_QUICKSHIFT_OPTIONS = {"kernel_size", "max_dist", "ratio"}
_SLIC_OPTIONS = {"n_segments", "compactness", "sigma"}


def superpixels(image_hwc: np.ndarray, segmentation: str | None = None, **options) -> np.ndarray:
    """Label map (H, W) of superpixels for an (H, W, 3) uint8 image.

    ``quickshift`` defaults to seed 000's ``kernel_size=4, max_dist=200, ratio=0.2``;
    ``slic`` to ``n_segments=50, compactness=10``. ``options`` override them. None (the default):
    quickshift, or slic where quickshift finds fewer than :data:`MIN_SUPERPIXELS` regions (a small
    image); options that belong to one of them pick that one.

    Example:
        >>> image = np.random.default_rng(0).integers(0, 256, (28, 28, 3), dtype=np.uint8)
        >>> superpixels(image).shape
        (28, 28)
    """
    from skimage.segmentation import quickshift, slic

    if segmentation is None:
        if set(options) & _SLIC_OPTIONS:
            segmentation = "slic"
        elif set(options) & _QUICKSHIFT_OPTIONS:
            segmentation = "quickshift"
        else:
            segments = superpixels(image_hwc, "quickshift")
            if len(np.unique(segments)) >= MIN_SUPERPIXELS:
                return segments
            segmentation = "slic"
    if segmentation == "quickshift":
        settings = {"kernel_size": 4, "max_dist": 200, "ratio": 0.2, "rng": 0} | options
        return quickshift(image_hwc, **settings)
    if segmentation == "slic":
        settings = {"n_segments": 50, "compactness": 10.0, "start_label": 0} | options
        return slic(image_hwc, **settings)
    raise ConfigError(f"unknown segmentation {segmentation!r}; use one of {', '.join(SEGMENTATIONS)}")


def lime_explain(
    model: nn.Module,
    preprocessing,
    image: torch.Tensor,
    target: int,
    num_samples: int = 1000,
    segmentation: str | None = None,
    num_features: int = 5,
    hide_color: str | float = "mean",
    batch_size: int = 64,
    seed: int = 0,
    scores=None,
    size: tuple[int, int] | None = None,
    **segment_options,
) -> tuple[np.ndarray, np.ndarray]:
    """Explain ``target`` for one uint8 (C, H, W) image.

    Args:
        num_samples: perturbed images LIME scores (seed 000 uses 1000).
        segmentation: ``quickshift`` or ``slic``; ``segment_options`` go to it. None: quickshift, or slic
            where quickshift finds fewer than :data:`MIN_SUPERPIXELS` regions (images under about 128 px).
        num_features: superpixels marked in the mask, for and against together
            (``get_image_and_mask(positive_only=False, num_features=...)``).
        hide_color: what a switched-off superpixel becomes: ``"mean"`` (the image's
            mean colour; LIME's own default, each superpixel's own mean, hides texture
            but not colour or brightness) or a 0..255 grey value.
        seed: LIME's random seed, so the same call gives the same answer.
        scores: a batch of model outputs -> (N, K) per-image class scores (the task's
            :meth:`~vislab.tasks.base.Task.lime_scores`); None: softmax probabilities.
        size: (height, width) to return the heatmap and mask at (the image's, shrunk with its aspect
            ratio kept); None: the image's own size.

    Returns:
        (heatmap, mask) over the image, at its size (or ``size``): heatmap float32 0..1 from the positive
        superpixel weights; mask int8 with +1 (for the class, green) / -1 (against, red).
        Pixels the model's centre crop leaves out are 0 in both.
    """
    try:
        from lime import lime_image
    except ImportError:
        raise ImportError("LIME needs the 'lime' package: `pip install lime` or `pip install vislab[explain]`") from None

    # LIME works on what the model sees (resized, centre-cropped): superpixels outside the
    # crop could never matter, and samples at input size skip a resize per perturbed image.
    view = model_view(preprocessing, image)
    channels = view.shape[0]
    rgb = view if channels == 3 else view[:1].expand(3, -1, -1)
    image_hwc = rgb.permute(1, 2, 0).contiguous().numpy()
    segments = superpixels(image_hwc, segmentation, **segment_options)
    # lime broadcasts hide_color over the image, so a per-channel colour works.
    fill = image_hwc.reshape(-1, 3).mean(0) if hide_color == "mean" else float(hide_color)
    device = model_device(model)

    def classify(batch_hwc: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(np.ascontiguousarray(batch_hwc)).round().clamp(0, 255).to(torch.uint8)
        batch = batch.permute(0, 3, 1, 2)
        if channels == 1:  # the model's own gray input, not LIME's gray2rgb copy
            batch = batch[:, :1]
        inputs = preprocessing(batch).to(device).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return (scores or probabilities)(model(inputs)).float().cpu().numpy()

    explainer = lime_image.LimeImageExplainer(random_state=seed)
    progress_bar = lime_image.tqdm
    lime_image.tqdm = lambda rows, *args, **kwargs: rows  # lime 0.2 always draws a bar on stderr
    # Channels-last convolutions run ~2x faster on CPU (oneDNN), and LIME is ~all forward passes.
    weights_4d = [p for p in model.parameters() if p.dim() == 4]
    already = bool(weights_4d) and not weights_4d[0].is_contiguous()
    model.to(memory_format=torch.channels_last)
    try:
        explanation = explainer.explain_instance(
            image_hwc, classify, labels=(target,), top_labels=None, hide_color=fill,
            num_samples=num_samples, batch_size=batch_size,
            segmentation_fn=lambda _image: segments, random_seed=seed,
        )
    finally:
        lime_image.tqdm = progress_bar
        if not already:
            model.to(memory_format=torch.contiguous_format)
    weights = dict(explanation.local_exp[target])
    heat = np.zeros(segments.shape, np.float32)
    for segment, weight in weights.items():
        heat[segments == segment] = max(weight, 0.0)
    if heat.max() > 0:
        heat /= heat.max()
    _, mask = explanation.get_image_and_mask(target, positive_only=False, num_features=num_features, hide_rest=False)
    image_size = tuple(image.shape[-2:])
    signed = _signed_mask(mask, segments, weights)
    return (heatmap_to_image(heat, preprocessing, image_size, size=size),
            heatmap_to_image(signed, preprocessing, image_size, nearest=True, size=size).astype(np.int8))


def model_view(preprocessing, image: torch.Tensor) -> torch.Tensor:
    """uint8 (C, H, W) image as the model sees it: its channels, resized and cropped to its input size."""
    pixels = preprocessing.convert_channels(image.unsqueeze(0)).float()
    return preprocessing.resize(pixels)[0].round().clamp(0, 255).to(torch.uint8)


def _signed_mask(mask: np.ndarray, segments: np.ndarray, weights: dict) -> np.ndarray:
    # lime marks chosen superpixels with 1 (for) / -1 (against) only in recent versions;
    # rebuild the sign from the weights so every version gives the same mask.
    signed = np.zeros(segments.shape, np.int8)
    for segment in np.unique(segments[mask != 0]):
        signed[segments == segment] = 1 if weights.get(int(segment), 0.0) > 0 else -1
    return signed
