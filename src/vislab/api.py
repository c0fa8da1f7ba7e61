"""The Python API, one function per CLI command, with the same checks as the CLI.

Keyword names are the CLI flags' names (``--batch-size`` is ``batch_size``).

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
from pathlib import Path

from vislab.core.config import Config, ConfigError, resolve_config

# Flat keyword -> dotted config key, for the names where the field name alone would be ambiguous
# or differs from the CLI flag.
_ALIASES = {"data": "data.source", "model": "model.name", "patience": "train.early_stopping.patience",
            "monitor": "train.early_stopping.monitor", "min_delta": "train.early_stopping.min_delta",
            "restore_best": "train.early_stopping.restore_best", "model_options": "model.options"}


def _dotted_keys() -> dict[str, str]:
    keys: dict[str, str] = {}

    def walk(obj, prefix):
        for field in dataclasses.fields(obj):
            value = getattr(obj, field.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{field.name}.")
            else:
                keys.setdefault(field.name, f"{prefix}{field.name}")

    walk(Config(), "")
    keys.update(_ALIASES)
    return keys


def _overrides(options: dict) -> dict:
    keys = _dotted_keys()
    overrides = {}
    for name, value in options.items():
        if name not in keys:
            import difflib

            close = difflib.get_close_matches(name, keys, n=1)
            raise ConfigError(f"unknown option {name!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
        overrides[keys[name]] = value
    return overrides


def make_config(config: str | None = None, **options) -> Config:
    """A resolved :class:`Config` from an optional YAML file and flat keyword options
    named like the CLI flags (``epochs=3``, ``batch_size=64``, ``hflip=True``, ``data="digits"``)."""
    return resolve_config(config, _overrides(options))


def train(config: str | None = None, resume: str | None = None, progress: bool = False, evaluate: bool = True,
          figures: bool = True, **options):
    """``vislab train``: train, evaluate on the test split, write the report.

    Returns a :class:`vislab.train.loop.FitResult` (``run_dir``, ``history``, ``metrics``).
    ``resume=RUN`` continues RUN from its last checkpoint with its own config; only
    ``epochs`` may change (anything else is refused, as the CLI refuses it). ``figures=False``
    (``--no-figures``): no figures but the training curves (no audit or evaluation figures, no Grad-CAM
    panels; audit.json, metrics.json and the report are written), for the runs of a sweep.
    """
    from vislab.pipelines import train as train_pipeline
    from vislab.train.loop import resume_config

    if resume is not None:
        epochs = options.pop("epochs", None)
        changes = _overrides(options)
        if config is not None:
            changes["config"] = config
        resume_config(resume, epochs, **changes)  # refuses any change but epochs, before any work
        return train_pipeline(None, resume=resume, epochs=epochs, progress=progress, evaluate=evaluate,
                              figures=figures)
    return train_pipeline(make_config(config, **options), progress=progress, evaluate=evaluate, figures=figures)


def evaluate(run_dir, data: str | None = None, split: str = "test", batch_size: int = 256, device: str = "auto",
             console=None, threshold: float | None = None, figures: bool = True) -> dict:
    """``vislab evaluate``: metrics (metrics.json for the test split, else metrics_<name>.json),
    figures and the report; returns the metrics dict. ``threshold`` (multi-label runs): one
    threshold for every label instead of the tuned ones in model.json. ``figures=False``
    (``--no-figures``): the metrics and the report, without the figures and Grad-CAM panels."""
    from vislab.pipelines import run_evaluation

    return run_evaluation(run_dir, data=data, split=split, batch_size=batch_size, device=device, console=console,
                          task_options={"threshold": threshold}, figures=figures)


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


def predict(model, images, top_k: int = 5, device: str = "auto", precision: str = "auto", batch_size: int = 32,
            weights=None, threshold: float | None = None):
    """``vislab predict``: the answer for each image file or folder, from a run folder, ``imagenet:NAME``,
    ``hf:NAME``, an exported ``MODEL.onnx`` or a model :func:`load_model` loaded.

    A multi-label run answers ``labels`` (every label at or above its threshold, from model.json,
    or ``threshold`` for all) and the ``top`` k.

    Example:
        >>> predict("runs/mosaics", ["a.png"], threshold=0.5)[0]["labels"]   # doctest: +SKIP
        [{'class': 'bag', 'index': 0, 'probability': 0.97, 'threshold': 0.5}]
    """
    from vislab.infer import Predictor, predict_files

    if str(model).lower().endswith(".onnx"):  # a `vislab export` file, run by onnxruntime
        from vislab.export.ort import OnnxPredictor

        _require_deploy("predict MODEL.onnx", "onnxruntime")
        predictor = OnnxPredictor(model)
    else:
        loaded = load_model(model, weights=weights)
        loaded.task.set_options(threshold=threshold)
        predictor = Predictor(loaded, device=device, precision=precision)
    return predict_files(predictor, images, top_k=top_k, batch_size=batch_size)


def explain(model, images, method: str = "gradcam", target="top", layer: str | None = None, out=None,
            weights=None, **opts):
    """``vislab explain``: one overlay PNG per image; returns one dict per image (``png``, ``class``, ...)."""
    from vislab.explain.api import explain_files

    return explain_files(load_model(model, weights=weights), images, out, method=method, target=target, layer=layer, **opts)


def activations(model, image, layers=None, out=None, weights=None) -> list[Path]:
    """``vislab activations``: every channel of each layer's output for one image, a PNG per layer."""
    from vislab.data.images import read_image
    from vislab.explain.activations import activations as compute, save_activations
    from vislab.explain.api import default_out_dir

    loaded = load_model(model, weights=weights)
    grids = compute(loaded.model, loaded.preprocessing, read_image(image), layers=layers)
    return list(zip(grids, save_activations(grids, out or default_out_dir(loaded, "activations"))))


def filters(model, layer: str, n: int = 64, steps: int = 40, out=None, weights=None) -> Path:
    """``vislab filters``: the patterns that excite a layer's filters, drawn in a grid."""
    from vislab.explain.api import default_out_dir, safe_filename
    from vislab.explain.filters import filter_grid, save_filter_grid

    loaded = load_model(model, weights=weights)
    result = filter_grid(loaded.model, loaded.preprocessing, layer, n=n, steps=steps)
    folder = Path(out) if out else default_out_dir(loaded, "filters")
    return save_filter_grid(result, folder / f"filters_{safe_filename(layer)}.png")


def audit(data: str, out=None, max_images: int = 2000, seed: int | None = None, config: str | None = None,
          task: str = "classification", label_issues: bool = False, folds: int | None = None,
          rank_by: str = "self_confidence", console=None, **data_options) -> dict:
    """``vislab audit``: audit.json and figures for a data set; returns the audit dict.

    ``label_issues=True`` (``--label-issues``) also finds the images whose label is probably wrong
    (:mod:`vislab.train.label_issues`: out-of-fold probabilities from ``folds`` logistic regressions on
    the shipped EfficientNet-Lite0's features, then cleanlab, ranked by ``rank_by``); it writes
    label_issues.csv, plots/label_issues.png, a ``label_issues`` section in audit.json and report.html.
    ``task="multilabel"`` reads a multi-label CSV (cleanlab's multi-label support then scores it).

    Example:
        >>> result = audit("photos/", out="audits/photos", label_issues=True)       # doctest: +SKIP
        >>> result["label_issues"]["issues"], result["label_issues"]["csv"]          # doctest: +SKIP
        (12, 'label_issues.csv')
    """
    from vislab.data.audit import audit_dataset
    from vislab.tasks import get_task

    cfg = resolve_config(config, {**_overrides({"data": data, **data_options}), "seed": seed})
    reader = get_task(task)
    dataset = reader.load_dataset(cfg.data, seed=cfg.seed)
    folder = Path(out or f"audit-{Path(str(dataset.name)).name or 'data'}")
    section = None
    if label_issues:
        from vislab.train.label_issues import find_label_issues

        if task == "segmentation":
            raise ConfigError("--label-issues checks image labels (classification, multilabel); a segmentation "
                              "mask has no single label to check: drop --label-issues or --task segmentation")
        if cfg.data.max_per_class and next(iter(dataset.splits.values())).in_memory:
            raise ConfigError("--label-issues names built-in images by their index, which --max-per-class renumbers; "
                              "drop --max-per-class (or audit a folder or CSV of the images you keep)")
        # every labelled image, named as the source gives it (what train --exclude/--relabel match)
        whole = reader.load_dataset(dataclasses.replace(cfg.data, val_split=0, test_split=0), seed=cfg.seed)
        section = find_label_issues(whole, folder, folds=folds, rank_by=rank_by, seed=cfg.seed, console=console)
    result = audit_dataset(dataset, folder, max_images=max_images, seed=cfg.seed, near_duplicates=True,
                           label_issues=section)
    if label_issues:
        from vislab.report.html import build_report

        result["report"] = str(build_report(folder))
    result["out"] = str(folder)
    return result


def augment_preview(data: str, out="augment_preview.png", count: int = 6, versions: int = 5, split: str = "train",
                    seed: int | None = None, config: str | None = None, **options) -> Path:
    """``vislab augment-preview``: images beside augmented copies; options are the augmentation flags."""
    from vislab.data.audit import preview_augmentation
    from vislab.data.sources import load_dataset

    cfg = resolve_config(config, {**_overrides({"data": data, **options}), "seed": seed})
    dataset = load_dataset(cfg.data, seed=cfg.seed)
    return preview_augmentation(dataset, cfg.augment, out, count=count, versions=versions, split=split,
                                seed=cfg.seed)


def compare(runs, out=".", evaluation: str | None = None) -> tuple[list[dict], Path, Path]:
    """``vislab compare``: leaderboard rows (each with its data and split), and the paths of
    leaderboard.csv and leaderboard.png; ``evaluation="val"`` reads metrics_val.json instead."""
    from vislab.evaluate.compare import compare_runs, write_leaderboard

    rows = compare_runs(runs, evaluation=evaluation)
    return (rows, *write_leaderboard(rows, out))


def report(run_dir) -> Path:
    """``vislab report``: (re)write the run folder's self-contained report.html."""
    from vislab.report.html import build_report

    return build_report(run_dir)


def summary(model: str, num_classes: int = 10, in_chans: int | None = None, input_size=None, depth: int = 3,
            weights=None) -> str:
    """``vislab summary``: layers, output shapes and parameter counts (Keras' model.summary()) of a
    model name (built fresh; ``weights`` loads a local file into it, checking that it fits), of a run
    folder's model, or of ``imagenet:NAME`` / ``hf:NAME``."""
    from vislab.models.summary import model_summary, summarize

    if Path(model).is_dir() or str(model).startswith(("imagenet:", "hf:")):
        loaded = load_model(model, weights=weights)
        return summarize(loaded.model, loaded.preprocessing.input_size, depth)
    return model_summary(model, num_classes=num_classes, in_chans=in_chans, input_size=input_size, depth=depth,
                         weights=weights)


def models() -> list[dict]:
    """``vislab models``: the registered model names with their defaults (no model is built)."""
    from vislab.models.registry import model_table

    return model_table()


def export(model, format: str = "onnx", out=None, dynamic_batch: bool = False, opset: int | None = None,
           include_preprocessing: bool = False, exporter: str = "auto", images=None, samples: int = 64,
           tolerance: float | None = None, seed: int = 0, weights=None):
    """``vislab export``: an ONNX file, its metadata sidecar and a parity report vs PyTorch fp32.

    Returns a :class:`vislab.export.ExportResult` (``path``, ``exporter``, ``parity``...).

    Example:
        >>> result = export("runs/digits", dynamic_batch=True)              # doctest: +SKIP
        >>> result.parity["top1_agreement"], result.parity["max_abs_diff"] < 1e-4   # doctest: +SKIP
        (1.0, True)
    """
    from vislab.core.config import EXPORT_FORMATS
    from vislab.export.onnx import export_onnx

    _require_deploy("vislab export", "onnx", "onnxruntime", "onnxscript")

    if format not in EXPORT_FORMATS:
        raise ConfigError(f"export format {format!r} is not supported; use one of {', '.join(EXPORT_FORMATS)}")
    return export_onnx(model, out=out, dynamic_batch=dynamic_batch, opset=opset,
                       include_preprocessing=include_preprocessing, images=images, samples=samples,
                       tolerance=tolerance, exporter=exporter, seed=seed, weights=weights)


def serve(model, host: str = "127.0.0.1", port: int = 8000, **options) -> None:
    """``vislab serve``: run the HTTP server until interrupted (options: :class:`vislab.serve.ServeConfig`).

    Example:
        >>> serve("runs/digits", port=8080, batch_size=32, max_wait_ms=5)   # doctest: +SKIP
    """
    _require_deploy("vislab serve", "fastapi", "fastapi_offline", "uvicorn", "multipart", "prometheus_client")
    from vislab.serve.app import run_server

    run_server(model, host=host, port=port, **options)


def _require_deploy(what: str, *modules: str) -> None:
    """A clear error naming the extra to install when export/serve's packages are missing."""
    import importlib.util

    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"{what} needs {', '.join(missing)}, which is not installed; "
                          "install it with: pip install 'vislab[deploy]'")
def lr_find(config: str | None = None, start_lr: float = 1e-7, end_lr: float = 10.0, steps: int = 200,
            out=None, write_config: str | None = None, suggestion: str = "valley", console=None,
            cli_overrides: dict | None = None, **options):
    """``vislab lr-find``: sweep the LR exponentially over ``steps`` training steps, plot loss vs LR.

    Options are train's (``data``, ``model``, ``pretrained``, ``freeze``, ``lr_backbone``...).
    Writes ``lr_find.png`` and ``lr_find.json`` into ``out`` (default ``runs/lr-find-<model>``);
    ``write_config=PATH`` puts the ``suggestion`` (valley or steepest) into a YAML config as
    ``train.lr``. ``cli_overrides`` are dotted config keys (what the CLI passes). Returns a :class:`vislab.train.lr_find.LRFindResult`.

    Example:
        >>> result = lr_find(data="digits", model="chollet_convnet", steps=100)   # doctest: +SKIP
        >>> result.suggestions                                                   # doctest: +SKIP
        {'valley': 0.0021, 'steepest': 0.0063}
    """
    from vislab.train.lr_find import lr_find as sweep

    overrides = dict(cli_overrides or {})  # the CLI's dotted keys; Python callers use flat names
    overrides.update(_overrides(options))
    cfg = resolve_config(config, overrides)
    folder = out or Path("runs") / f"lr-find-{cfg.model.name.replace(':', '-').replace('/', '-')}"
    return sweep(cfg, start_lr=start_lr, end_lr=end_lr, steps=steps, out=folder, console=console,
                 write_config=write_config, suggestion=suggestion)


def segment(model: str, images, out, weights: str | None = None, palette: str | None = None, alpha: float = 1.0,
            beta: float = 0.6, class_maps=(), panels: bool = True, device: str = "auto", precision: str = "auto"):
    """``vislab segment``: masks, colour masks, overlays, panels, legends and pixel_shares.csv in ``out``.

    ``model`` is a segmentation run folder, a torchvision name (``lraspp_mobilenet_v3_large``, ...)
    or ``hf:NAME_OR_FOLDER``; returns a :class:`vislab.segment.SegmentResult`.

    Example:
        >>> result = segment("runs/fashion-seg", ["composite.png"], out="seg/")   # doctest: +SKIP
        >>> sorted(result.shares["composite.png"])[:2]                             # doctest: +SKIP
    """
    from vislab.segment import segment_images

    return segment_images(model, [images] if isinstance(images, (str, Path)) else list(images), out,
                          weights=weights, alpha=alpha, beta=beta, class_maps=class_maps, palette=palette,
                          device=device, precision=precision, panels=panels)


def make_segmentation_data(out, train: int = 2000, test: int = 400, size: int = 64, seed: int = 0) -> Path:
    """An offline ``--task segmentation`` set: Fashion-MNIST items pasted on ``size`` px canvases (11 classes).

    Seeded; train composites use only Fashion-MNIST train items, test composites only test items.

    Example:
        >>> make_segmentation_data("data/fashion-seg", train=2000, test=400)   # doctest: +SKIP
        PosixPath('data/fashion-seg')
    """
    from vislab.data.composites import make_fashion_composites

    return make_fashion_composites(out, train=train, test=test, size=size, seed=seed)
