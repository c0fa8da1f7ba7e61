"""``explain``: one call for every method, plus the files it writes.

Example:
    >>> import torch
    >>> from vislab.models import create_model
    >>> from vislab.data.preprocess import Preprocessing
    >>> model = create_model("seed_cnn2", num_classes=2, input_size=(32, 32)).eval()
    >>> pre = Preprocessing(input_size=(3, 32, 32))
    >>> image = torch.randint(0, 256, (3, 48, 48), dtype=torch.uint8)
    >>> result = explain(model, pre, image, method="gradcam", class_names=["cat", "dog"])
    >>> result.heatmap.shape, result.method, result.layer
    ((48, 48), 'gradcam', 'features.4')
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from vislab.core.errors import ConfigError
from vislab.explain import attribution
from vislab.explain.base import METHODS, Explanation, as_image_tensor, heatmap_to_image, model_device
from vislab.explain.targets import NoFeatureMapError, find_target_layer
from vislab.tasks import get_task

# Options each method accepts through explain(**opts); anything else is an error.
METHOD_OPTIONS = {
    "gradcam": set(),
    "gradcam++": set(),
    "occlusion": {"window", "stride"},
    "integrated-gradients": {"steps", "smooth"},
    "lime": {
        "num_samples", "segmentation", "num_features", "hide_color", "batch_size", "seed",
        "kernel_size", "max_dist", "ratio", "n_segments", "compactness", "sigma",
    },
}


def explain(
    model: nn.Module,
    preprocessing,
    image,
    method: str = "gradcam",
    target: int | str = "top",
    layer: str | None = None,
    class_names: Sequence[str] | None = None,
    task=None,
    size: tuple[int, int] | None = None,
    **opts,
) -> Explanation:
    """Explain the model's score for one class on one image.

    Args:
        model: any vislab model (a ``vislab.runs.load(...).model``).
        preprocessing: the model's :class:`~vislab.data.preprocess.Preprocessing`;
            the model sees ``preprocessing(image)``.
        image: uint8 (C, H, W) tensor or array, as ``vislab.data.images.read_image`` gives.
        method: ``gradcam``, ``gradcam++``, ``lime``, ``occlusion`` or ``integrated-gradients``.
        target: ``"top"`` (the predicted class), a class index, or a class name.
        layer: Grad-CAM layer (a ``model.named_modules()`` name); automatic when None.
        class_names: names for ``target`` lookup and titles.
        task: the run's task (``loaded.task``), which picks the explained score; the default task when None.
        size: (height, width) to return the heatmap (and LIME's mask) at: the image's size shrunk with its
            aspect ratio kept, e.g. the size it is drawn at (:func:`vislab.viz.montage.display_size`), so a
            large photo's map is never made at its full size. None: the image's own size. The model sees
            ``preprocessing(image)`` either way.
        **opts: method options: occlusion ``window, stride``; integrated-gradients
            ``steps, smooth``; lime ``num_samples, segmentation, num_features,
            hide_color, seed`` and the superpixel settings.

    Returns:
        :class:`Explanation` with a 0..1 heatmap over the image, at its own size (or ``size``).

    Raises:
        ValueError: unknown method/option/target/layer, or Grad-CAM on a model without feature maps.

    Example:
        >>> loaded = vislab.runs.load("imagenet:efficientnet_lite0")  # doctest: +SKIP
        >>> result = explain(loaded.model, loaded.preprocessing, image, target="tabby",
        ...                  class_names=loaded.class_names)  # doctest: +SKIP
    """
    method = method.lower()
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    unknown = set(opts) - METHOD_OPTIONS[method]
    if unknown:
        valid = ", ".join(sorted(METHOD_OPTIONS[method])) or "none"
        raise ConfigError(f"option(s) {', '.join(sorted(unknown))} do not apply to {method}; its options: {valid}")
    if layer is not None and not method.startswith("gradcam"):
        raise ConfigError(f"layer= picks the Grad-CAM layer; {method} works on the input pixels, so drop layer")
    image = as_image_tensor(image)
    was_training = model.training
    model.eval()
    try:
        inputs = preprocessing(image).unsqueeze(0).to(model_device(model))
        with torch.no_grad():
            logits = model(inputs)
        index, probability, score = (task or get_task()).explain_target(logits, target, class_names)
        predicted, predicted_probability = index, probability
        if not (isinstance(target, str) and target.lower() == "top"):
            predicted, predicted_probability, _ = (task or get_task()).explain_target(logits, "top", class_names)
        layer_name, mask = None, None
        if method in ("gradcam", "gradcam++"):
            target_layer = find_target_layer(model, preprocessing.input_size, layer)
            layer_name = target_layer.name
            heat = attribution.grad_cam(model, inputs, score, target_layer, plus_plus=method == "gradcam++")
        elif method == "occlusion":
            heat = attribution.occlusion(model, inputs, score, **opts)
        elif method == "integrated-gradients":
            heat = attribution.integrated_gradients(model, inputs, score, **opts)
        else:
            from vislab.explain.lime import lime_explain

            heat, mask = lime_explain(model, preprocessing, image, index,
                                      scores=(task or get_task()).lime_scores(logits, index), size=size, **opts)
        if method != "lime":  # lime_explain maps its own results back
            heat = heatmap_to_image(heat, preprocessing, tuple(image.shape[-2:]), size=size)
    finally:
        model.train(was_training)

    def name_of(i):
        return str(class_names[i]) if class_names is not None and i < len(class_names) else None

    return Explanation(
        heatmap=np.asarray(heat, np.float32), target=index, target_name=name_of(index), score=probability,
        method=method, layer=layer_name, mask=mask,
        predicted=predicted, predicted_name=name_of(predicted), predicted_score=predicted_probability,
    )


def save_overlay(explanation: Explanation, image, path) -> Path:
    """Write the explanation over the image as a PNG (LIME: its green/red superpixels too), the image drawn
    at its display size (:func:`vislab.viz.montage.display_size`) and the heatmap over it.

    Example:
        >>> save_overlay(result, image, "runs/cats/plots/explain/cat1_gradcam.png")  # doctest: +SKIP
    """
    from vislab.viz.explain import lime_figure, overlay_figure, save_figure

    image = as_image_tensor(image)
    if explanation.mask is not None:
        fig = lime_figure(image.numpy(), explanation.mask, explanation.heatmap, explanation.title)
    else:
        title = explanation.title + (f"\nlayer {explanation.layer}" if explanation.layer else "")
        fig = overlay_figure(image.numpy(), explanation.heatmap, title)
    return save_figure(fig, path)


def explain_samples(
    loaded,
    images: Sequence,
    out_dir,
    titles: Sequence[str] | None = None,
    method: str = "gradcam",
    filename: str = "gradcam_samples.png",
    columns: int = 4,
) -> Path:
    """One panel of explanations for several images, for the evaluation report.

    Models without feature maps (an MLP) fall back to occlusion, so the panel is
    always there; its file is then named for it (``gradcam_samples.png`` becomes
    ``occlusion_samples.png``).

    Args:
        loaded: ``vislab.runs.load(...)`` result (``.model``, ``.preprocessing``, ``.class_names``).
        images: uint8 (C, H, W) images, e.g. the report's samples or its most-wrong images.
        out_dir: folder for the PNG (made if missing), usually ``RUN/plots``.
        titles: one per image, e.g. ``"true: cat"``; the predicted class and probability are added.
        method: any :func:`explain` method.
        filename: PNG name inside ``out_dir``.

    Returns:
        The PNG's path.

    Example:
        >>> explain_samples(loaded, [split.load(i) for i in worst], run / "plots",
        ...                 titles=[f"true: {names[labels[i]]}" for i in worst],
        ...                 filename="gradcam_most_wrong.png")  # doctest: +SKIP
    """
    from vislab.core.background import draw

    if titles is not None and len(titles) != len(images):
        raise ValueError(f"got {len(titles)} titles for {len(images)} images; give one per image or none")
    if method.startswith("gradcam"):
        try:
            find_target_layer(loaded.model, loaded.preprocessing.input_size)
        except ValueError:
            # no feature maps to weight (e.g. an MLP): the panel is named for what it shows
            filename = filename.replace(method_filename(method), "occlusion", 1)
            method = "occlusion"
    from vislab.viz.montage import display_rgb, display_size

    shown, heatmaps, labels = [], [], []
    for index, image in enumerate(images):
        image = as_image_tensor(image)
        size = display_size(*image.shape[-2:])  # what the panel draws: never a large image's full size
        result = explain(loaded.model, loaded.preprocessing, image, method=method, class_names=loaded.class_names,
                         task=getattr(loaded, "task", None), size=size)
        name = result.target_name if result.target_name is not None else str(result.target)
        share = " of pixels" if getattr(getattr(loaded, "task", None), "per_pixel", False) else ""
        label = f"pred: {name} ({result.score:.0%}{share})"  # a segmentation's score is the class's pixel share
        labels.append(f"{titles[index]}\n{label}" if titles else label)
        shown.append(display_rgb(image.numpy(), size))
        heatmaps.append(result.heatmap)
    return draw("vislab.viz.explain:write_overlay_panel", shown, heatmaps, labels, Path(out_dir) / filename,
                columns=columns)


def method_filename(method: str) -> str:
    """A method's part of a file name, distinct for every method: ``gradcam++`` is ``gradcam-pp``,
    so it never overwrites Grad-CAM's ``gradcam`` image (safe_filename would drop the ``++``).

    Example:
        >>> method_filename("gradcam++"), method_filename("gradcam")
        ('gradcam-pp', 'gradcam')
    """
    return safe_filename(method.replace("++", "-pp").replace("+", "-plus"))


def overlay_filename(stem: str, method: str, target: str | None = None, layer: str | None = None) -> str:
    """The name of the PNG ``vislab explain`` writes for one image: ``STEM[_TARGET][_LAYER]_METHOD.png``.
    ``target`` is given only when one was asked for (not the prediction) and ``layer`` only when it is not the
    automatic Grad-CAM layer, so an explanation at another layer never overwrites the default one.

    Example:
        >>> overlay_filename("cat", "gradcam"), overlay_filename("cat", "gradcam++", "tabby cat", "features.3")
        ('cat_gradcam.png', 'cat_tabby_cat_features.3_gradcam-pp.png')
    """
    parts = [stem] + [safe_filename(part) for part in (target, layer) if part is not None]
    return "_".join(parts + [method_filename(method)]) + ".png"


def safe_filename(text: str) -> str:
    """A file-name-safe version of ``text`` (class names can hold spaces, commas, slashes)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "image"


def default_out_dir(loaded, kind: str = "explain") -> Path:
    """``RUN/plots/<kind>`` for a run folder (the report picks it up), else ``runs/<kind>-<model>``: the folders
    a command writes outside a run go under ``runs/``, as train's, lr-find's, audit's and compare's do."""
    if getattr(loaded, "run_dir", None) is not None:
        return Path(loaded.run_dir) / "plots" / kind
    name = str(getattr(loaded, "spec", {}).get("name", "model")).split(":")[-1]
    return Path("runs") / f"{kind}-{safe_filename(name)}"


def model_name(loaded) -> str | None:
    """The model's name as the user gave it (``mlp``, ``imagenet:efficientnet_lite0``), from the run's
    model.json; None when ``loaded`` does not say."""
    name = (getattr(loaded, "spec", None) or {}).get("name")
    return str(name) if name else None


def explain_files(
    loaded,
    inputs: Sequence,
    out_dir=None,
    method: str | None = None,
    target: int | str = "top",
    layer: str | None = None,
    **opts,
) -> list[dict]:
    """Explain image files (or folders of them) and write one PNG each, as ``vislab explain`` does.

    A file that cannot be read gets an ``error`` entry (the reason, as ``vislab predict`` gives it) and
    the others go on.

    Args:
        loaded: ``vislab.runs.load(...)`` result.
        inputs: image files and folders (searched recursively).
        out_dir: where the PNGs go; default :func:`default_out_dir`.
        method: as :func:`explain`; None (no method chosen) is Grad-CAM, or occlusion for a model without
            convolution layers (an MLP), as the evaluation report does (each entry's ``method`` says which).
        target, layer, **opts: as :func:`explain`.

    Returns:
        One dict per input: ``file``, ``class``, ``index``, ``probability``, ``method``, ``png`` (or ``error``),
        ``measure``: what ``probability`` is, ``"probability"``, or ``"pixel_share"`` for a segmentation run
        (the share of the pixels predicted as the class),
        and ``predicted`` and ``predicted_probability``: the class the model predicts and its probability (the
        same as ``class`` and ``probability`` for the default target, the prediction);
        the PNG is named by :func:`overlay_filename`: a ``layer`` other than the automatic one is in its name.

    Raises:
        NoFeatureMapError: Grad-CAM asked of a model without convolution layers (with no method chosen: at
            a ``layer`` given); the message names the model as the run does (``mlp``).

    Example:
        >>> explain_files(vislab.runs.load("runs/cats"), ["cat.jpg"], method="lime")  # doctest: +SKIP
        [{'file': 'cat.jpg', 'class': 'cat', 'index': 0, 'probability': 0.97, 'method': 'lime', 'layer': None,
          'png': 'runs/cats/plots/explain/cat_lime.png', 'predicted': 'cat', 'predicted_probability': 0.97}]
    """
    from vislab.data.images import BadImageError, read_image
    from vislab.data.sources import expand_image_paths
    from vislab.viz.montage import display_size

    out = Path(out_dir) if out_dir is not None else default_out_dir(loaded)
    paths, bad = expand_image_paths(inputs)
    results: list[dict] = [{"file": path, "error": reason} for path, reason in bad]
    stems: dict[str, int] = {}
    per_pixel = bool(getattr(getattr(loaded, "task", None), "per_pixel", False))
    chosen = method is not None
    method = method if chosen else "gradcam"
    automatic = None  # the layer Grad-CAM picks without --layer: its files keep their plain names
    if layer is not None and method.startswith("gradcam"):
        try:
            automatic = find_target_layer(loaded.model, loaded.preprocessing.input_size).name
        except ValueError:
            pass
    for path in paths:
        try:
            image = read_image(path)
        except BadImageError as exc:
            results.append({"file": path, "error": exc.reason})  # the path is the entry's "file"
            continue
        size = display_size(*image.shape[-2:])  # the map over the image as the PNG draws it, not at full size
        try:
            result = explain(loaded.model, loaded.preprocessing, image, method=method, target=target, layer=layer,
                             task=getattr(loaded, "task", None), class_names=loaded.class_names, size=size, **opts)
        except NoFeatureMapError as exc:
            name = model_name(loaded)
            who = f"model {name}" if name else exc.model  # as the run names it ("mlp"), not its class
            if chosen or layer is not None:  # a layer given is Grad-CAM asked for
                raise NoFeatureMapError(who, exc.detail) from None
            # no feature maps to weight: occlusion, the documented default for such a model, as explain_samples
            # does for the report; each entry's "method" and PNG name say so
            method = "occlusion"
            result = explain(loaded.model, loaded.preprocessing, image, method=method, target=target,
                             task=getattr(loaded, "task", None), class_names=loaded.class_names, size=size, **opts)
        stem = safe_filename(Path(path).stem)
        stems[stem] = stems.get(stem, 0) + 1  # two cat.jpg in different folders must not overwrite
        suffix = f"_{stems[stem]}" if stems[stem] > 1 else ""
        target_part = None if str(target).lower() == "top" else str(result.target_name or result.target)
        layer_part = result.layer if layer is not None and result.layer != automatic else None
        png = save_overlay(result, image, out / overlay_filename(f"{stem}{suffix}", method, target_part, layer_part))
        results.append({
            "file": path, "class": result.target_name if result.target_name is not None else str(result.target),
            "index": result.target, "probability": round(result.score, 6), "method": result.method,
            "layer": result.layer, "png": str(png),
            "predicted": result.predicted_name if result.predicted_name is not None else str(result.predicted),
            "predicted_probability": None if result.predicted_score is None else round(result.predicted_score, 6),
            # what "probability" holds: a segmentation's is the share of the pixels predicted as the class
            "measure": "pixel_share" if per_pixel else "probability",
        })
    return results
