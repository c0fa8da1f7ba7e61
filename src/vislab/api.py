"""The Python API, one function per CLI command.

Example:
    >>> import vislab
    >>> result = vislab.train(data="digits", model="chollet_convnet", epochs=2,
    ...                       out="/tmp/vislab-api-doc")                     # doctest: +SKIP
    >>> vislab.evaluate(result.run_dir)["accuracy"]                          # doctest: +SKIP
    >>> vislab.predict(result.run_dir, ["digit.png"], top_k=3)               # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses

from vislab.config import Config, ConfigError, resolve_config

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


def make_config(config: str | None = None, **options) -> Config:
    """A resolved :class:`Config` from an optional YAML file and flat keyword options
    named like the CLI flags (``epochs=3``, ``batch_size=64``, ``hflip=True``, ``data="digits"``)."""
    keys = _dotted_keys()
    overrides = {}
    for name, value in options.items():
        if name not in keys:
            import difflib

            close = difflib.get_close_matches(name, keys, n=1)
            raise ConfigError(f"unknown option {name!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
        overrides[keys[name]] = value
    return resolve_config(config, overrides)


def train(config: str | None = None, resume: str | None = None, progress: bool = False, **options):
    """Train and return a :class:`vislab.train.loop.FitResult` (``run_dir``, ``history``, ``metrics``)."""
    from vislab.train.loop import fit

    if resume is not None:
        return fit(None, resume=resume, epochs=options.get("epochs"), progress=progress)
    return fit(make_config(config, **options), progress=progress)


def evaluate(run_dir, data: str | None = None, split: str = "test", **kwargs) -> dict:
    """Evaluate a run folder; returns the metrics dict (also written to metrics.json)."""
    from vislab.evaluate.runner import evaluate_run

    return evaluate_run(run_dir, data=data, split=split, **kwargs)


def predict(model, images, top_k: int = 5, device: str = "auto", precision: str = "auto") -> list[dict]:
    """Top-k predictions for image files/folders from a run folder or ``imagenet:NAME``."""
    from vislab.evaluate.predict import Predictor, predict_files
    from vislab.runs import load

    return predict_files(Predictor(load(model), device=device, precision=precision), images, top_k=top_k)
