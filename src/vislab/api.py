"""The Python API, one function per CLI command, with the same checks as the CLI.

Keyword names are the CLI flags' names (``--batch-size`` is ``batch_size``). Where a command takes
several files, folders or runs (``images``, ``runs``), one path (a string or a Path) or a list of them
is accepted.

Example:
    >>> import vislab.api as api
    >>> result = api.train(data="digits", model="chollet_convnet", epochs=2,
    ...                    out="/tmp/vislab-api-doc")                        # doctest: +SKIP
    >>> api.evaluate(result.run_dir)["accuracy"]                            # doctest: +SKIP
    >>> api.predict(result.run_dir, ["digit.png"], top_k=3)                 # doctest: +SKIP
    >>> api.explain(result.run_dir, ["digit.png"], method="gradcam++")      # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from vislab import __version__  # noqa: F401  (the CLI's --version reads it here)
from vislab.core.config import (DEFAULT_TASK, ConfigError, check_augment_policy, check_ranges, option_overrides,
                                resolve_config)

# Where `compare` writes when no out= is given: a folder of its own, never the current one.
COMPARE_OUT = Path("runs") / "compare"


def _paths(value, name: str) -> list:
    """``images=`` / ``runs=`` as a list: one path (a string or a Path) is one item, never its characters
    (``predict(run, "a.png")`` read "a", ".", ... and then every image under the current folder)."""
    if isinstance(value, (str, os.PathLike)):
        return [value]
    try:
        items = list(value)
    except TypeError:
        raise ConfigError(f"{name}={value!r}: give a path or a list of paths") from None
    for item in items:
        if not isinstance(item, (str, os.PathLike)):
            raise ConfigError(f"{name}: {item!r} is not a path; give a path or a list of paths")
    return items


def model_source(model):
    """What a model argument names: a run folder, ``imagenet:NAME``, ``hf:NAME``, a ``.onnx`` file, or a
    bare timm name with ImageNet weights, read as ``imagenet:NAME`` (explaining random weights shows nothing).

    Anything else stays as it is, so a mistyped or missing run folder gets the run folder's error (which
    names imagenet:MODEL too) rather than an unknown-model one. A path object is read as its string; anything
    else (a loaded model) is returned as it is.

    Example:
        >>> model_source("resnet18"), model_source("runs/missing"), model_source("hf:org/name")
        ('imagenet:resnet18', 'runs/missing', 'hf:org/name')
    """
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if not isinstance(model, str):
        return model
    if ":" in model or "/" in model or "\\" in model or model.lower().endswith(".onnx") or Path(model).exists():
        return model
    from vislab.models.registry import is_timm_name

    return f"imagenet:{model}" if is_timm_name(model) else model


def _backbone_of():
    """The models layer's :func:`~vislab.models.registry.has_backbone`, for the config checks below it."""
    from vislab.models.registry import has_backbone

    return has_backbone


def make_config(config: str | None = None, **options) -> Config:
    """A resolved :class:`Config` from an optional YAML file and flat keyword options
    named like the CLI flags (``epochs=3``, ``batch_size=64``, ``hflip=True``, ``data="digits"``;
    :data:`vislab.core.config.OPTION_ALIASES` names the few that differ from a config field)."""
    return resolve_config(config, option_overrides(options), backbone_of=_backbone_of())


def train(config: str | None = None, resume: str | None = None, progress: bool = False, evaluate: bool = True,
          figures: bool = True, **options):
    """``vislab train``: train, evaluate on the test split, write the report.

    Returns a :class:`vislab.train.loop.FitResult` (``run_dir``, ``history``, ``metrics``).
    ``resume=RUN`` continues RUN from its last checkpoint with its own config; only
    ``epochs`` may change (anything else is refused, as the CLI refuses it). ``figures=False``
    (``--no-figures``): no figures but the training curves (no audit or evaluation figures, no Grad-CAM
    panels; audit.json, metrics.json and the report are written), for the runs of a sweep.
    An ``out`` inside the ``data`` folder (or the ``image_root`` folder), or one already holding images, is
    refused; with no ``out`` the run gets a folder of its own, ``runs/MODEL-DATA-TIME`` (``-2``, ``-3``... when
    another run took that name).
    With no ``recipe`` (option or YAML) the recipe is ``auto``: once the data is loaded it picks the model
    and the settings the options leave open (:mod:`vislab.train.recipe`); ``recipe="none"`` keeps the code
    defaults. ``time_budget="5m"`` trains for about that long (:mod:`vislab.train.budget`).
    """
    from vislab.core.background import helpers

    # the figures and scikit-learn's arithmetic run in helper interpreters, which start now and import
    # while this process imports torch
    with helpers():
        return _train(config, resume, progress, evaluate, figures, options)


def _train(config, resume, progress, evaluate, figures, options):
    from vislab.pipelines import train as train_pipeline
    from vislab.train.loop import resume_config

    if resume is not None:
        epochs = options.pop("epochs", None)
        changes = option_overrides({name: value for name, value in options.items() if value is not None})
        if config is not None:
            changes["config"] = config
        resume_config(resume, epochs, **changes)  # refuses any change but epochs, before any work
        return train_pipeline(None, resume=resume, epochs=epochs, progress=progress, evaluate=evaluate,
                              figures=figures)
    # no recipe named: "auto", which reads the data when the run starts and picks what the options leave open
    cfg = resolve_config(config, option_overrides(options), default_recipe="auto",
                         backbone_of=_backbone_of())
    _check_out(cfg.out or "runs", cfg.data.source, images_too=True)
    if cfg.data.image_root:  # a CSV's images: a run folder beside the CSV is fine, one among the images is not
        _check_out(cfg.out or "runs", cfg.data.image_root, what="the --image-root folder")
    return train_pipeline(cfg, progress=progress, evaluate=evaluate, figures=figures)


def _check_out(out, data, images_too: bool = False, flag: str = "--out", what: str = "the data folder",
               writes: str = "the run's files") -> None:
    """Refuse an output folder inside the ``--data`` folder (the run's PNGs would join the data set,
    and a class-per-folder reader would even take ``plots/`` for a class); ``images_too``: also one
    that already holds images, a data folder of its own. ``what`` names the folder ``data`` is."""
    from vislab.data.images import IMAGE_EXTENSIONS

    folder = Path(out).expanduser().resolve()
    in_the_way = next((path for path in (folder, *folder.parents) if path.is_file()), None)
    if in_the_way is not None:
        where = "is a file" if in_the_way == folder else f"is inside {in_the_way}, a file"
        raise ConfigError(f"{flag} {out} {where}; give {flag} a folder to write into, e.g. {flag} runs/NAME")
    source = Path(str(data)).expanduser()
    if data is not None and source.is_dir() and _within(folder, source):
        raise ConfigError(f"{flag} {out} is inside {what} {data}: the files written there would become "
                          f"part of the data set; give {flag} a folder outside it, e.g. {flag} runs/NAME")
    if images_too and folder.is_dir():
        images = [p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
        if images and not (folder / "model.json").is_file() and not (folder / "config.yaml").is_file():
            raise ConfigError(f"{flag} {out} holds images ({images[0]}, ...): it looks like a data folder, and "
                              f"{writes} would be written among them; give {flag} a new folder, e.g. "
                              f"{flag} runs/NAME")


def _within(folder: Path, root: Path, strict: bool = False) -> bool:
    """``folder`` (resolved) is ``root`` or, unless ``strict``, inside it."""
    root = root.expanduser().resolve()
    return folder == root or (not strict and root in folder.parents)


def _beside(folder: Path, suffix: str) -> Path:
    """A sibling of ``folder`` named after it with ``suffix`` (``photos`` -> ``photos-explain``); ``.`` and
    ``..`` are named from the full path."""
    folder = Path(folder).expanduser().resolve() if Path(folder).name in ("", "..") else Path(folder)
    return folder.with_name(f"{folder.name}{suffix}")


def _check_out_of_inputs(out, inputs, command: str, default: bool = False, flag: str = "--out") -> None:
    """:func:`_check_out`'s rule for the images a command reads: ``out`` may not be an input folder or
    inside it (folders are read with their sub-folders), nor the folder of an input file; either way the
    next run over those images would read this one's PNGs as images. ``default``: ``out`` is the
    command's own choice, not the user's."""
    folder = Path(out).expanduser().resolve()
    named = f"the output folder {out} (the default; choose another with {flag})" if default else f"{flag} {out}"
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir() and _within(folder, path):
            where, given = f"is inside the input folder {item}", Path(item)
        elif path.is_file() and _within(folder, path.parent, strict=True):
            where, given = f"is the folder of the input image {item}", Path(item).parent
        else:
            continue
        example = _beside(given, f"-{command}")
        raise ConfigError(f"{named} {where}: the files `vislab {command}` writes there would be read as images "
                          f"the next time; give {flag} a folder outside it, e.g. {flag} {example}")


def evaluate(run_dir, data: str | None = None, split: str = "test", batch_size: int = 256, device: str = "auto",
             console=None, threshold: float | None = None, figures: bool = True, **data_options) -> dict:
    """``vislab evaluate``: metrics (metrics.json for the test split, else metrics_<name>.json),
    figures and the report; returns the metrics dict. ``threshold`` (multi-label runs): one
    threshold for every label instead of the tuned ones in model.json. ``figures=False``
    (``--no-figures``): the metrics and the report, without the figures and Grad-CAM panels.
    ``data_options`` say how to read the data (``data_dir``, ``image_root``, ``file_col``, ``label_col``,
    ``label_sep``): ``data``'s, whose CSV otherwise reads with its own columns and folder rather than the
    training data's, or the run's own data when its files have moved."""
    from vislab.core.background import helpers

    check_ranges(batch_size=batch_size, threshold=threshold)
    reading = _data_reading(data_options)
    with helpers():
        from vislab.pipelines import run_evaluation

        return run_evaluation(run_dir, data=data, split=split, batch_size=batch_size, device=device,
                              console=console, task_options={"threshold": threshold}, figures=figures,
                              data_options=reading)


DATA_READING = ("data_dir", "image_root", "file_col", "label_col", "label_sep")


def _data_reading(options: dict) -> dict:
    """The data-reading options evaluate takes, as DataConfig fields; any other name is refused."""
    unknown = sorted(set(options) - set(DATA_READING))
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], DATA_READING, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"evaluate takes no option {', '.join(unknown)}{hint}; how to read the data: "
                          f"{', '.join(DATA_READING)}")
    return {name: value for name, value in options.items() if value is not None}


def load_model(model, device: str = "cpu", weights=None):
    """A run folder, ``imagenet:NAME`` or ``hf:NAME`` -> :class:`vislab.runs.Loaded`; ``weights`` is a
    local file or folder to read instead (``--weights``; see :func:`vislab.runs.load`).

    A :class:`~vislab.runs.Loaded` is returned as it is, so the functions below that take a model
    (``predict``, ``explain``, ``activations``, ``filters``) also take one loaded once for several calls.
    """
    from vislab.runs import Loaded, load

    if isinstance(model, Loaded):
        if weights is not None:
            raise ConfigError("weights= names the file to load a model from; this model is already loaded")
        return model
    return load(model, device=device, weights=weights)


class Predictions(list):
    """What :func:`predict` returns: one dict per image (a list), ``notes``: what the precision choice did
    (what was timed and won, near-tied answers recomputed in fp32), for a log or stderr, and ``figure``: the
    PNG drawn (None when none was asked for, or no image was answered)."""

    def __init__(self, results, notes=(), figure: Path | None = None):
        super().__init__(results)
        self.notes = list(notes)
        self.figure = figure


def predict(model, images, top_k: int = 5, device: str = "auto", precision: str = "auto", batch_size: int = 32,
            weights=None, threshold: float | None = None, figure=None) -> Predictions:
    """``vislab predict``: the answer for each image file or folder, from a run folder, ``imagenet:NAME``
    (or a bare ImageNet name), ``hf:NAME``, an exported ``MODEL.onnx`` or a model :func:`load_model` loaded.

    A multi-label run answers ``labels`` (every label at or above its threshold, from model.json,
    or ``threshold`` for all) and the ``top`` k. ``figure=PNG`` also draws the images titled with
    their top-1 class (and a multi-label run's with its labels); a name without a suffix gets ``.png``, and
    a folder, or a file inside an input folder, is refused before anything runs. A file that cannot be read gets an
    ``error`` entry (``file``, ``error``: the reason) and the others go on, as :func:`explain`'s do;
    when no file could be read, every entry is an error and nothing is written (no ``figure``):
    ``vislab predict`` then prints each as ``vislab predict: error: FILE: REASON`` and exits 1.

    Example:
        >>> predict("runs/mosaics", ["a.png"], threshold=0.5)[0]["labels"]   # doctest: +SKIP
        [{'class': 'bag', 'index': 0, 'probability': 0.97, 'threshold': 0.5}]
    """
    from vislab.infer import Predictor, predict_files

    images = _paths(images, "images")
    check_ranges(top_k=top_k, batch_size=batch_size, threshold=threshold)
    figure = _figure_path(figure, images)
    model = model_source(model)
    if isinstance(model, str) and model.lower().endswith(".onnx"):  # a `vislab export` file, run by onnxruntime
        from vislab.export.ort import OnnxPredictor

        _require_deploy("predict MODEL.onnx", "onnxruntime")
        predictor = OnnxPredictor(model)
        _one_class_per_image(predictor.task, model)  # `vislab segment` reads the graph too
    else:
        loaded = load_model(model, weights=weights)
        _one_class_per_image(loaded.task, model)  # before the predictor's precision probe
        predictor = Predictor(loaded, device=device, precision=precision)
    predictor.task.set_options(threshold=threshold)  # --threshold: a run folder's and an exported graph's alike
    results = predict_files(predictor, images, top_k=top_k, batch_size=batch_size)
    drawn = None
    if figure and not all("error" in result for result in results):  # no image answered: nothing to draw
        drawn = _draw_predictions(results, figure)
    return Predictions(results, _precision_notes(predictor, results), figure=drawn)


def _figure_path(figure, images) -> Path | None:
    """predict's ``figure``, checked before any model loads: a PNG file's path (``.png`` added to a bare name),
    never a folder, nor in an input folder, where the next predict over it would read it as an image."""
    if not figure:
        return None
    path = Path(figure).expanduser()
    if path.is_dir():
        raise ConfigError(f"--figure {figure} is a folder; give the PNG file to write, e.g. --figure "
                          f"{_beside(path, '-predictions.png')}")
    if not path.suffix:
        path = path.with_suffix(".png")
    elif path.suffix.lower() != ".png":
        raise ConfigError(f"--figure {figure}: the figure is a PNG; give a .png file, e.g. --figure "
                          f"{path.with_suffix('.png')}")
    for item in images:  # a folder predict reads (with its sub-folders) would read the figure next time
        folder = Path(item).expanduser()
        if folder.is_dir() and _within(path.parent.resolve(), folder):
            raise ConfigError(f"--figure {figure} is inside the input folder {item}: the next predict over it "
                              f"would read the figure as an image; write it outside, e.g. --figure "
                              f"{_beside(folder, '-predictions.png')}")
    return path


def _one_class_per_image(task, model) -> None:
    """`vislab predict` answers per image: a per-pixel model's answer is a mask, which `vislab segment` writes."""
    if task.per_pixel:
        from vislab.core.errors import RunError

        raise RunError(f"{model} is a {task.name} model: `vislab predict` answers one class per image; "
                       f"`vislab segment {model} IMAGES --out DIR` writes its masks, colour masks and overlays")


def _precision_notes(predictor, results) -> list[str]:
    """What the precision choice did, in a line or two (onnxruntime runs fp32 and measures nothing)."""
    notes = []
    choice = getattr(predictor, "choice", None)
    if choice is not None and choice.source in ("measured", "cache"):
        notes.append(f"precision auto: {choice.describe()}")  # what was timed, and won
    if getattr(predictor, "dtype", None) is not None and any("top" in r for r in results):
        dtype = str(predictor.dtype).replace("torch.", "")
        if predictor.recheck_ties:
            notes.append(f"precision auto: {dtype}, {predictor.rechecked} near-tied answer(s) recomputed in fp32")
        else:
            notes.append(f"precision {dtype}: a near-tied top-1 can differ from fp32's; --precision auto "
                         "re-checks those in fp32")
    return notes


def _draw_predictions(results, path) -> Path:
    """The readable images of ``results``, each titled with its top-1 class; a multi-label run's also
    with its label set (every label at or above its threshold)."""
    from vislab.data.images import BadImageError, open_image
    from vislab.viz.predictions import plot_topk

    kept = []
    for result in results:
        if "top" in result:
            try:
                kept.append((open_image(result["file"]), result))
            except BadImageError:
                continue
    titles = None
    if any("labels" in result for _, result in kept):
        titles = [f"labels: {', '.join(str(label['class']) for label in result.get('labels', [])) or 'no label'}"[:40]
                  for _, result in kept]
    return plot_topk([image for image, _ in kept], [result["top"] for _, result in kept], path, titles=titles)


def _check_method_options(method: str | None, **given) -> None:
    """An explanation option given with a method it does not belong to (LIME's with Grad-CAM, Grad-CAM's layer
    with LIME): refused before any model loads, naming the option as a keyword and as its flag."""
    owners = {"num_samples": ("lime",), "segmentation": ("lime",), "layer": ("gradcam", "gradcam++")}
    for name, value in given.items():
        if value is None or (method or "gradcam").lower() in owners[name]:
            continue
        what = ("picks the Grad-CAM layer (method gradcam or gradcam++)" if name == "layer"
                else "is a LIME option (method lime)")
        raise ConfigError(f"{name} (--{name.replace('_', '-')}) {what}; it does not apply to "
                          + (method or "the default method, gradcam (occlusion for an MLP)"))


def explain(model, images, method: str | None = None, target="top", layer: str | None = None, out=None,
            weights=None, num_samples: int | None = None, segmentation: str | None = None, device: str = "auto",
            **opts) -> list[dict]:
    """``vislab explain``: one overlay PNG per image; returns one dict per image (``file``, ``png``,
    ``class``, ``probability``, ``method``; ``error`` for a file that cannot be read). ``method`` None:
    Grad-CAM, or occlusion for a model without convolution layers (an MLP). ``num_samples`` (None: 1000) and
    ``segmentation`` (superpixels; None: quickshift, or slic where quickshift finds fewer than 10 regions, as
    on images under about 128 px) are LIME's: given with another method they are refused, as ``layer`` (the
    Grad-CAM layer) is with a method other than ``gradcam``/``gradcam++``. ``device``
    (``auto``, ``cpu``, ``cuda``, ``mps``) is where the model and the explanation run, as :func:`predict` picks it.
    ``out`` (default ``RUN/plots/explain``) may not be an input folder, inside one, or an input image's folder."""
    from vislab.core.device import resolve_device
    from vislab.explain.explainers import default_out_dir, explain_files

    images = _paths(images, "images")
    _check_method_options(method, num_samples=num_samples, segmentation=segmentation, layer=layer)
    if num_samples is not None:
        check_ranges(num_samples=num_samples)
    if method == "lime":
        opts = {k: v for k, v in (("num_samples", num_samples), ("segmentation", segmentation)) if v is not None} | opts
    if out is not None:
        _check_out_of_inputs(out, images, "explain")
    where = resolve_device(device)  # a device that is not here is refused before the model loads
    loaded = load_model(model_source(model), weights=weights)
    if out is None:
        out = default_out_dir(loaded, "explain")
        _check_out_of_inputs(out, images, "explain", default=True)
    loaded.model.to(where)
    return explain_files(loaded, images, out, method=method, target=target, layer=layer, **opts)


def activations(model, image, layers=None, out=None, weights=None, device: str = "auto") -> list:
    """``vislab activations``: every channel of each layer's output for one image, a PNG per layer.

    Returns ``(grid, path)`` pairs: ``grid.name``, ``grid.channels``, ``grid.map_size`` and the PNG.
    The PNGs are named ``activations_{image stem}_{NN}_{layer}.png``. The default ``out`` is
    ``RUN/plots/activations`` for a run folder, else ``activations-MODEL``; the image's own folder is refused.
    ``device`` (``auto``, ``cpu``, ``cuda``, ``mps``) is where the model runs, as :func:`predict` picks it."""
    from vislab.core.device import resolve_device
    from vislab.data.images import read_image
    from vislab.explain.activations import activations as compute, save_activations
    from vislab.explain.explainers import default_out_dir

    if isinstance(layers, str):  # one layer's name, never its characters
        layers = [layers]
    if out is not None:
        _check_out_of_inputs(out, [image], "activations")
    where = resolve_device(device)  # a device that is not here is refused before the model loads
    loaded = load_model(model_source(model), weights=weights)
    if out is None:
        out = default_out_dir(loaded, "activations")
        _check_out_of_inputs(out, [image], "activations", default=True)
    loaded.model.to(where)
    grids = compute(loaded.model, loaded.preprocessing, read_image(image), layers=layers)
    return list(zip(grids, save_activations(grids, out, image=image)))


def filters(model, layer: str | None = None, n: int = 64, steps: int = 40, out=None, weights=None,
            device: str = "auto") -> Path:
    """``vislab filters``: the patterns that excite a layer's filters, drawn in a grid; returns the PNG.
    Without a ``layer`` the error lists the model's layers. ``device`` (``auto``, ``cpu``, ``cuda``, ``mps``)
    is where the gradient ascent runs, as :func:`predict` picks it."""
    from vislab.core.device import resolve_device
    from vislab.explain.explainers import default_out_dir, safe_filename
    from vislab.explain.filters import filter_grid, save_filter_grid

    check_ranges(n=n, steps=steps)
    where = resolve_device(device)  # a device that is not here is refused before the model loads
    loaded = load_model(model_source(model), weights=weights)
    loaded.model.to(where)
    if not layer:
        from vislab.explain.targets import layer_listing

        raise ConfigError(f"filters needs --layer NAME, the layer whose filters to draw, e.g. a convolution. "
                          f"{layer_listing(loaded.model, loaded.preprocessing.input_size)}")
    result = filter_grid(loaded.model, loaded.preprocessing, layer, n=n, steps=steps)
    folder = Path(out) if out else default_out_dir(loaded, "filters")
    return save_filter_grid(result, folder / f"filters_{safe_filename(layer)}.png")


def audit(data: str, out=None, max_images: int = 2000, seed: int | None = None, config: str | None = None,
          task: str = DEFAULT_TASK, label_issues: bool = False, folds: int | None = None,
          rank_by: str = "self_confidence", console=None, **data_options) -> dict:
    """``vislab audit``: audit.json and figures for a data set, read and audited as ``task`` reads it
    (a multi-label CSV, image/mask pairs); returns the audit dict, with ``out`` (the folder written).

    ``out`` defaults to ``runs/audit-<data name>``; ``console`` (a rich Console) also prints the audit.
    ``label_issues=True`` (``--label-issues``) also finds the images whose label is probably wrong
    (:mod:`vislab.train.label_issues`: out-of-fold probabilities over ``folds`` folds, for single-label
    images up to 64 px the mean of a small CNN's and a logistic regression's on the shipped
    EfficientNet-Lite0's features, else the logistic regression's; then cleanlab, ranked by ``rank_by``); it writes
    label_issues.csv, plots/label_issues.png, a ``label_issues`` section in audit.json and report.html.
    ``task="multilabel"`` reads a multi-label CSV (cleanlab's multi-label support then scores it).

    Example:
        >>> api.audit("data/fashion-seg", task="segmentation")["masks"]["train"]["images"]   # doctest: +SKIP
        2000
        >>> result = audit("photos/", out="audits/photos", label_issues=True)       # doctest: +SKIP
        >>> result["label_issues"]["issues"], result["label_issues"]["csv"]          # doctest: +SKIP
        (12, 'label_issues.csv')
    """
    from vislab.tasks import get_task

    check_ranges(max_images=max_images, folds=folds)
    cfg = resolve_config(config, {**option_overrides({"data": data, **data_options}), "seed": seed})
    if out is not None:
        _check_out(out, cfg.data.source, images_too=True, writes="the audit's files")
    task_ = get_task(task)
    dataset = task_.load_dataset(cfg.data, seed=cfg.seed)
    folder = Path(out) if out else Path("runs") / f"audit-{Path(str(dataset.name)).name or 'data'}"
    section = None
    if label_issues:
        from vislab.train.label_issues import find_label_issues

        if task_.per_pixel:
            raise ConfigError(f"--label-issues checks image labels (classification, multilabel); a {task} target "
                              f"has no single label per image to check: drop --label-issues or --task {task}")
        if cfg.data.max_per_class and next(iter(dataset.splits.values())).in_memory:
            raise ConfigError("--label-issues names built-in images by their index, which --max-per-class renumbers; "
                              "drop --max-per-class (or audit a folder or CSV of the images you keep)")
        # every labelled image, named as the source gives it (what train --exclude/--relabel match)
        whole = task_.load_dataset(dataclasses.replace(cfg.data, val_split=0, test_split=0), seed=cfg.seed)
        section = find_label_issues(whole, folder, folds=folds, rank_by=rank_by, seed=cfg.seed, console=console)
    result = task_.audit(dataset, folder, seed=cfg.seed, max_images=max_images, near_duplicates=True,
                         label_issues=section)
    if label_issues:
        from vislab.report.html import build_report

        result["report"] = str(build_report(folder))
    _drop_earlier_audit_files(folder, result)
    result["out"] = str(folder)
    if console is not None:
        from vislab.data.audit import print_audit

        print_audit(result, console)
        drawn = len(result.get("figures", []))
        console.print(f"wrote {folder / 'audit.json'} and {drawn} "
                      f"figure{'' if drawn == 1 else 's'} under {folder / 'plots'}")
    return result


def _drop_earlier_audit_files(folder: Path, result: dict) -> None:
    """An audit into a folder an earlier audit wrote: the files that audit wrote and this one did not (another
    data set's label_issues.csv and report.html, a figure this data does not get) are removed, once this audit
    is written; nothing else in the folder is touched."""
    kept = {folder / "audit.json", *(folder / name for name in result.get("figures", []))}
    if "label_issues" in result:
        kept |= {folder / "label_issues.csv", folder / "report.html"}
    earlier = [folder / "label_issues.csv", folder / "report.html", *(folder / "plots").glob("audit_*.png"),
               folder / "plots" / "label_issues.png"]
    for path in earlier:
        if path not in kept and path.is_file():
            path.unlink()


def augment_preview(data: str, out="augment_preview.png", count: int = 6, versions: int = 5, split: str = "train",
                    seed: int | None = None, config: str | None = None, console=None, task: str = DEFAULT_TASK,
                    **options) -> Path:
    """``vislab augment-preview``: images beside augmented copies; options are the augmentation flags
    (``rotation=15``, ``hflip=True``...). ``task`` reads the data as training does: ``segmentation`` draws
    each image with its mask over it, the mask moved by the same flips, rotations, zooms and shifts.
    ``out`` is a .png file, or a folder that gets augment_preview.png; returns the path written.
    ``augment_policy="trivialaugment"`` (or ``"randaugment"``) applies that policy first, as training does.
    ``console`` gets a note when no augmentation is set."""
    from vislab.data.audit import preview_augmentation
    from vislab.tasks import get_task
    from vislab.train.loop import _augment_policy

    check_ranges(count=count, versions=versions)
    cfg = resolve_config(config, {**option_overrides({"data": data, **options}), "seed": seed})
    check_augment_policy(task, cfg.augment.policy)  # as training refuses it
    path = _png_path(out, "augment_preview.png")
    _check_out(path.parent, cfg.data.source)
    task_ = get_task(task)
    dataset = task_.load_dataset(cfg.data, seed=cfg.seed)  # a wrong --data is the one message, before any note
    policy = _augment_policy(cfg)  # training's own: the same policy, drawn from the same generator
    if not cfg.augment.active and policy is None and console is not None:
        console.print("note: no augmentation is set (e.g. --rotation 15 --hflip); the copies equal the originals")
    return preview_augmentation(dataset, cfg.augment, path, count=count, versions=versions, split=split,
                                seed=cfg.seed, task=task_, policy=policy)


def _png_path(out, default_name: str, flag: str = "--out") -> Path:
    """Where a one-picture command writes: ``out`` itself when it names a .png file, else the file
    ``default_name`` inside the folder ``out`` (an existing folder, or a name without a suffix).

    Example:
        >>> _png_path("figs/aug.png", "augment_preview.png"), _png_path("figs", "augment_preview.png")
        (PosixPath('figs/aug.png'), PosixPath('figs/augment_preview.png'))
    """
    path = Path(out)
    if path.is_dir() or str(out).endswith(("/", "\\")) or not path.suffix:
        return path / default_name
    if path.suffix.lower() != ".png":
        raise ConfigError(f"{flag} {out}: the picture is a PNG; give a .png file name or a folder")
    return path


def compare(runs, out=None, evaluation: str | None = None, console=None) -> tuple[list[dict], Path, Path]:
    """``vislab compare``: leaderboard rows (each with its data and split), and the paths of
    leaderboard.csv and leaderboard.png, written into ``out`` (default ``runs/compare``);
    ``evaluation="val"`` reads metrics_val.json instead (a name no run has is refused, naming the ones
    they have). Runs never evaluated are listed apart, never ranked. ``console`` also prints the table."""
    from vislab.evaluate.compare import compare_runs, evaluated, print_leaderboard, unread_metrics, write_leaderboard

    runs = _paths(runs, "runs")
    if not runs:
        raise ConfigError("compare needs one or more run folders, e.g. compare(['runs/a', 'runs/b'])")
    if out is not None:
        from vislab.core.files import vislab_output

        if vislab_output(out) != "compare's own output":  # an earlier leaderboard's folder is written again
            _check_out(out, None, images_too=True, writes="the leaderboard")  # not a data folder
        if (Path(out) / "model.json").is_file():
            raise ConfigError(f"--out {out} is a run folder: the leaderboard would be written among that run's "
                              f"files; give --out a folder of its own, e.g. --out {COMPARE_OUT}")
    rows = compare_runs(runs, evaluation=evaluation)
    if not evaluated(rows):
        unread = [message for message in map(unread_metrics, rows) if message]
        if unread:  # evaluated, but the metrics file is damaged: say which and how to write it again
            raise ConfigError(f"nothing to rank: {unread[0]}")
        untested = all(r.get("own_test_split") is False for r in rows)  # `vislab evaluate RUN` finds no test split
        fix = ("trained with --test-split 0 on data with no test split of its own: run `vislab evaluate RUN --data "
               "DATA` on other data with its classes first" if untested else "run `vislab evaluate RUN` first")
        raise ConfigError(f"none of {', '.join(r['run'] for r in rows)} has been evaluated (no "
                          f"{rows[0]['metrics_file'] if rows else 'metrics.json'}), so there is nothing to rank: {fix}")
    written = write_leaderboard(rows, COMPARE_OUT if out is None else out)  # an --out it cannot write fails first
    if console is not None:
        print_leaderboard(rows, console, evaluation=evaluation)
    return (rows, *written)


def report(run_dir) -> Path:
    """``vislab report``: (re)write the run folder's self-contained report.html."""
    from vislab.report.html import build_report

    return build_report(run_dir)


def summary(model: str, num_classes: int | None = None, in_chans: int | None = None, input_size=None, depth: int = 3,
            weights=None) -> str:
    """``vislab summary``: layers, output shapes and parameter counts (Keras' model.summary()) of a
    model name (built fresh; ``weights`` loads a local file into it, checking that it fits), of a run
    folder's model (its trainable count is the one training left: a frozen backbone counts as
    non-trainable), or of ``imagenet:NAME`` / ``hf:NAME``. ``num_classes`` (10 when not given), ``in_chans``
    and ``input_size`` build a model name; a run folder's or a pretrained model is read as it is, and refuses them."""
    from vislab.models.summary import model_summary, summarize

    check_ranges(num_classes=num_classes, in_chans=in_chans, input_size=input_size, depth=depth)
    missing_path = "/" in str(model) and ":" not in str(model) and not Path(model).exists()  # runs/typo, no name
    if Path(model).is_file() or str(model).lower().endswith(".onnx") or missing_path:  # a file, or no folder there
        from vislab.core.files import run_folder_error

        raise run_folder_error(model)
    if _summary_of_run(model) or str(model).startswith(("imagenet:", "hf:")):
        given = [flag for flag, value in (("--num-classes", num_classes), ("--in-chans", in_chans),
                                           ("--input-size", input_size)) if value is not None]
        if given:  # the model is read as it is: options for building one would be silently ignored
            verb, them = ("does", "it") if len(given) == 1 else ("do", "them")
            what = f"the run folder {model}, whose model" if Path(model).is_dir() else f"{model}, which"
            raise ConfigError(f"{', '.join(given)} {verb} not apply to {what} is summarized as it was trained; "
                              f"drop {them}, or give a model name to build one with {them}")
        loaded = load_model(model, weights=weights)
        return summarize(loaded.model, loaded.preprocessing.input_size, depth,
                         trainable=loaded.spec.get("trainable_parameters") if weights is None else None)
    return model_summary(model, num_classes=10 if num_classes is None else num_classes, in_chans=in_chans,
                         input_size=input_size, depth=depth, weights=weights)


def _summary_of_run(model) -> bool:
    """``vislab summary MODEL``: a run folder (finished or not), never a folder merely named like a model
    (``mkdir fastnet``): such a folder falls through to the model name, and any other to the run folder error."""
    path = Path(model)
    if not path.is_dir():
        return False
    from vislab.runs import unfinished_run

    if (path / "model.json").is_file() or (path / "config.yaml").is_file() or unfinished_run(path):
        return True
    from vislab.models.registry import check_model_name

    try:
        check_model_name(str(model))
    except ConfigError:
        return True
    return False


def models(task: str | None = None, parameters: bool = False, num_classes: int = 10, timm: str | None = None,
           pretrained_only: bool = False) -> list[dict]:
    """``vislab models``: every listed model (vislab's nets, the shipped pretrained backbones, the
    segmentation networks, the hf: form) with its ``tasks``, ``default input`` and ``weights``
    (none, shipped, download); no model is built unless ``parameters``.

    ``task="segmentation"`` keeps the models that can learn it; ``parameters=True`` builds each
    listable one for ``num_classes`` to count its parameters; ``timm="vit_*"`` lists timm's names
    matching the pattern instead (``pretrained_only``: those with weights).

    Example:
        >>> [row["name"] for row in models(task="segmentation")][:2]
        ['unet', 'fpn']
    """
    from vislab.models.registry import model_table
    from vislab.tasks import get_task, task_names

    if pretrained_only and not timm:
        raise ConfigError("--pretrained-only filters the names --timm PATTERN lists; give --timm too, "
                          "e.g. --timm 'vit_*' --pretrained-only (the weights column says which models ship "
                          "pretrained weights)")

    check_ranges(num_classes=num_classes)
    if timm is not None:
        import timm as timm_lib

        return [{"name": name, "family": "timm"} for name in timm_lib.list_models(timm, pretrained=pretrained_only)]
    tasks = [get_task(name) for name in task_names()]
    if task is not None:
        get_task(task)  # an unknown task is an error naming the known ones
    rows = []
    for row in model_table():
        row["tasks"] = [t.name for t in tasks if (row["outputs"] == "pixel") == bool(t.per_pixel)]
        if task is None or task in row["tasks"]:
            rows.append(row)
    if parameters:
        from vislab.core.weights import parameter_counts
        from vislab.models import create_model

        for row in rows:
            if not row["name"].startswith("hf:"):  # a form, not a model: its config comes from the hub
                model = create_model(row["name"], num_classes=num_classes, in_chans=row["in_chans"])
                row["parameters"] = parameter_counts(model)["total"]
            else:
                row["parameters"] = None
    return rows


def export(model, format: str = "onnx", out=None, dynamic_batch: bool = True, opset: int | None = None,
           include_preprocessing: bool = False, exporter: str = "auto", images=None, samples: int = 64,
           tolerance: float | None = None, seed: int = 0, weights=None):
    """``vislab export``: an ONNX file, its metadata sidecar and a parity report vs PyTorch fp32.

    Returns a :class:`vislab.export.ExportResult` (``path``, ``exporter``, ``parity``...).

    Example:
        >>> result = export("runs/digits")   # a free batch dimension; dynamic_batch=False fixes it at 1   # doctest: +SKIP
        >>> result.parity["top1_agreement"], result.parity["max_abs_diff"] < 1e-4   # doctest: +SKIP
        (1.0, True)
    """
    from vislab.core.config import EXPORT_FORMATS
    from vislab.export.onnx import export_onnx

    check_ranges(opset=opset, samples=samples, tolerance=tolerance, seed=seed)
    _require_deploy("vislab export", "onnx", "onnxruntime", "onnxscript")

    if format not in EXPORT_FORMATS:
        raise ConfigError(f"export format {format!r} is not supported; use one of {', '.join(EXPORT_FORMATS)}")
    return export_onnx(model_source(model), out=out, dynamic_batch=dynamic_batch, opset=opset,
                       include_preprocessing=include_preprocessing,
                       images=None if images is None else _paths(images, "images"), samples=samples,
                       tolerance=tolerance, exporter=exporter, seed=seed, weights=weights)


def serve(model, host: str = "127.0.0.1", port: int = 8000, **options) -> None:
    """``vislab serve``: run the HTTP server until interrupted (options: :class:`vislab.serve.ServeConfig`).

    Example:
        >>> serve("runs/digits", port=8080, batch_size=32, max_wait_ms=5)   # doctest: +SKIP
    """
    check_ranges(port=port, **options)  # options without a range (device, weights...) pass
    _require_deploy("vislab serve", "fastapi", "fastapi_offline", "uvicorn", "multipart", "prometheus_client")
    from vislab.serve.app import run_server

    run_server(model_source(model), host=host, port=port, **options)


def _require_deploy(what: str, *modules: str) -> None:
    """A clear error naming the extra to install when export/serve's packages are missing."""
    import importlib.util

    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"{what} needs {', '.join(missing)}, which is not installed; "
                          "install it with: pip install 'vislab[deploy]'")
def lr_find(config: str | None = None, start_lr: float = 1e-7, end_lr: float = 10.0, steps: int = 200,
            out=None, write_config: str | None = None, suggestion: str = "valley", console=None, **options):
    """``vislab lr-find``: sweep the LR exponentially over ``steps`` training steps, plot loss vs LR.

    Options are train's (``data``, ``task``, ``model``, ``pretrained``, ``freeze``, ``lr_backbone``...), and
    the sweep trains what ``train`` would with them: the task's data and, with no recipe named, the model
    and settings ``recipe="auto"`` picks for the data (a logistic-regression head on cached features, which
    has no learning rate, is refused with how to sweep end-to-end training instead); with cached features and a
    gradient optimiser (``cache_features=True``, or ``recipe="transfer", optimizer="adam"``) the head trained on
    them. An L-BFGS optimiser is refused with the flag to add (``--optimizer adam``).
    Writes ``lr_find.png`` and ``lr_find.json`` into ``out`` (default ``runs/lr-find-<model>``);
    ``write_config=PATH`` puts the ``suggestion`` (valley or steepest) into a YAML config as
    ``train.lr`` (checked before the sweep; a ``model.lr_backbone`` the file sets moves at the ratio the sweep
    kept when the sweep trained the backbone at a rate of its own, which a line says).
    Returns a :class:`vislab.train.lr_find.LRFindResult`.

    Example:
        >>> result = lr_find(data="digits", model="chollet_convnet", steps=100)   # doctest: +SKIP
        >>> result.suggestions                                                   # doctest: +SKIP
        {'valley': 0.0021, 'steepest': 0.0063}
    """
    from vislab.core.config import LR_FIND_UNUSED
    from vislab.train.lr_find import lr_find as sweep

    check_ranges(start_lr=start_lr, end_lr=end_lr, steps=steps)
    unused = [name for name, value in options.items() if name in LR_FIND_UNUSED and value is not None]
    if unused:  # train's options that a sweep has no use for: refused, as the command line refuses them
        raise ConfigError(f"{unused[0]} is a train option; {LR_FIND_UNUSED[unused[0]]}")
    # the model and settings `vislab train` would use: with no recipe named, auto's choices for the data
    cfg = resolve_config(config, option_overrides(options), default_recipe="auto",
                         backbone_of=_backbone_of())
    folder = out or Path("runs") / f"lr-find-{cfg.model.name.replace(':', '-').replace('/', '-')}"
    return sweep(cfg, start_lr=start_lr, end_lr=end_lr, steps=steps, out=folder, console=console,
                 write_config=write_config, suggestion=suggestion)


def segment(model: str, images, out, weights: str | None = None, palette: str | None = None, alpha: float = 1.0,
            beta: float = 0.6, class_maps=(), panels: bool = True, device: str = "auto", precision: str = "auto"):
    """``vislab segment``: masks, colour masks, overlays, panels, legends and pixel_shares.csv in ``out``, which
    may not be an input folder, inside one, or an input image's folder (the next run would segment them).

    ``model`` is a segmentation run folder, its exported ``MODEL.onnx``, a torchvision name
    (``lraspp_mobilenet_v3_large``, ...) or ``hf:NAME_OR_FOLDER``; returns a :class:`vislab.segment.SegmentResult`.
    An input that cannot be read is listed in its ``bad_files`` (path, reason) and the others go on, as
    :func:`predict` and :func:`explain` answer an ``error`` entry; when none can be read, its ``files`` is
    empty and nothing is written (``out`` is not made): ``vislab segment`` prints each as an error, exits 1.

    Example:
        >>> result = segment("runs/fashion-seg", ["composite.png"], out="seg/")   # doctest: +SKIP
        >>> sorted(result.shares["composite.png"])[:2]                             # doctest: +SKIP
    """
    from vislab.export.ort import is_onnx_path
    from vislab.segment import segment_images

    check_ranges(alpha=alpha, beta=beta)
    images = _paths(images, "images")
    _check_out_of_inputs(out, images, "segment")
    # a segmentation run's exported graph runs in onnxruntime (fp32), as `vislab serve` runs it
    segmenter = _onnx_segmenter(model, weights, palette) if is_onnx_path(model) else None
    return segment_images(model, images, out,
                          weights=weights, alpha=alpha, beta=beta, class_maps=class_maps, palette=palette,
                          device=device, precision=precision, panels=panels, segmenter=segmenter)


def _onnx_segmenter(path, weights, palette):
    from vislab.core.errors import RunError
    from vislab.export.ort import OnnxPredictor
    from vislab.segment import Segmenter, model_palette

    if weights:
        raise ConfigError("--weights is for the named torchvision architectures; an ONNX graph holds its own weights")
    _require_deploy("segment MODEL.onnx", "onnxruntime")
    predictor = OnnxPredictor(path)
    if not predictor.task.per_pixel:
        raise RunError(f"{path} is a {predictor.task.name} model; `vislab segment` needs a segmentation model "
                       f"(an export of a `vislab train --task segmentation` run), or use `vislab predict {path}`")
    return Segmenter(predictor, model_palette(predictor.loaded, palette), str(path))


def make_segmentation_data(out, train: int = 2000, test: int = 400, size: int = 64, seed: int = 0) -> Path:
    """An offline ``--task segmentation`` set: Fashion-MNIST items pasted on ``size`` px canvases (11 classes).

    Seeded; train composites use only Fashion-MNIST train items, test composites only test items.

    Example:
        >>> make_segmentation_data("data/fashion-seg", train=2000, test=400)   # doctest: +SKIP
        PosixPath('data/fashion-seg')
    """
    from vislab.data.composites import make_fashion_composites

    return make_fashion_composites(out, train=train, test=test, size=size, seed=seed)
