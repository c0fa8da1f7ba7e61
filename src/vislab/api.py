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
          **options):
    """``vislab train``: train, evaluate on the test split, write the report.

    Returns a :class:`vislab.train.loop.FitResult` (``run_dir``, ``history``, ``metrics``).
    ``resume=RUN`` continues RUN from its last checkpoint with its own config; only
    ``epochs`` may change (anything else is refused, as the CLI refuses it).
    """
    from vislab.pipelines import train as train_pipeline
    from vislab.train.loop import resume_config

    if resume is not None:
        epochs = options.pop("epochs", None)
        changes = _overrides(options)
        if config is not None:
            changes["config"] = config
        resume_config(resume, epochs, **changes)  # refuses any change but epochs, before any work
        return train_pipeline(None, resume=resume, epochs=epochs, progress=progress, evaluate=evaluate)
    return train_pipeline(make_config(config, **options), progress=progress, evaluate=evaluate)


def evaluate(run_dir, data: str | None = None, split: str = "test", batch_size: int = 256, device: str = "auto",
             console=None) -> dict:
    """``vislab evaluate``: metrics (metrics.json for the test split, else metrics_<name>.json),
    figures and the report; returns the metrics dict."""
    from vislab.pipelines import run_evaluation

    return run_evaluation(run_dir, data=data, split=split, batch_size=batch_size, device=device, console=console)


def load_model(model, device: str = "cpu"):
    """A run folder or ``imagenet:NAME`` -> :class:`vislab.runs.Loaded`."""
    from vislab.runs import load

    return load(model, device=device)


def predict(model, images, top_k: int = 5, device: str = "auto", precision: str = "auto", batch_size: int = 32):
    """``vislab predict``: the answer for each image file or folder, from a run folder or ``imagenet:NAME``."""
    from vislab.infer import Predictor, predict_files

    predictor = Predictor(load_model(model), device=device, precision=precision)
    return predict_files(predictor, images, top_k=top_k, batch_size=batch_size)


def explain(model, images, method: str = "gradcam", target="top", layer: str | None = None, out=None, **opts):
    """``vislab explain``: one overlay PNG per image; returns one dict per image (``png``, ``class``, ...)."""
    from vislab.explain.api import explain_files

    return explain_files(load_model(model), images, out, method=method, target=target, layer=layer, **opts)


def activations(model, image, layers=None, out=None) -> list[Path]:
    """``vislab activations``: every channel of each layer's output for one image, a PNG per layer."""
    from vislab.data.images import read_image
    from vislab.explain.activations import activations as compute, save_activations
    from vislab.explain.api import default_out_dir

    loaded = load_model(model)
    grids = compute(loaded.model, loaded.preprocessing, read_image(image), layers=layers)
    return list(zip(grids, save_activations(grids, out or default_out_dir(loaded, "activations"))))


def filters(model, layer: str, n: int = 64, steps: int = 40, out=None) -> Path:
    """``vislab filters``: the patterns that excite a layer's filters, drawn in a grid."""
    from vislab.explain.api import default_out_dir, safe_filename
    from vislab.explain.filters import filter_grid, save_filter_grid

    loaded = load_model(model)
    result = filter_grid(loaded.model, loaded.preprocessing, layer, n=n, steps=steps)
    folder = Path(out) if out else default_out_dir(loaded, "filters")
    return save_filter_grid(result, folder / f"filters_{safe_filename(layer)}.png")


def audit(data: str, out=None, max_images: int = 2000, seed: int | None = None, config: str | None = None,
          **data_options) -> dict:
    """``vislab audit``: audit.json and figures for a data set; returns the audit dict."""
    from vislab.data.audit import audit_dataset
    from vislab.data.sources import load_dataset

    cfg = resolve_config(config, {**_overrides({"data": data, **data_options}), "seed": seed})
    dataset = load_dataset(cfg.data, seed=cfg.seed)
    folder = Path(out or f"audit-{Path(str(dataset.name)).name or 'data'}")
    result = audit_dataset(dataset, folder, max_images=max_images, seed=cfg.seed)
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


def compare(runs, out=".") -> tuple[list[dict], Path, Path]:
    """``vislab compare``: leaderboard rows, and the paths of leaderboard.csv and leaderboard.png."""
    from vislab.evaluate.compare import compare_runs, write_leaderboard

    rows = compare_runs(runs)
    return (rows, *write_leaderboard(rows, out))


def report(run_dir) -> Path:
    """``vislab report``: (re)write the run folder's self-contained report.html."""
    from vislab.report.html import build_report

    return build_report(run_dir)


def summary(model: str, num_classes: int = 10, in_chans: int | None = None, input_size=None, depth: int = 3) -> str:
    """``vislab summary``: layers, output shapes and parameter counts (Keras' model.summary()) of a
    model name (built fresh) or of a run folder's model."""
    from vislab.models.summary import model_summary, summarize

    if Path(model).is_dir():
        loaded = load_model(model)
        return summarize(loaded.model, loaded.preprocessing.input_size, depth)
    return model_summary(model, num_classes=num_classes, in_chans=in_chans, input_size=input_size, depth=depth)


def models() -> list[dict]:
    """``vislab models``: the registered model names with their defaults (no model is built)."""
    from vislab.models.registry import model_table

    return model_table()


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
