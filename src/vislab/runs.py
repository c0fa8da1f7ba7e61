"""The run folder: the contract between commands.

``vislab.runs.load(spec)`` rebuilds a trained model from ``model.json`` +
``model.safetensors`` without unpickling anything; ``imagenet:NAME`` gives a
pretrained ImageNet classifier instead.

Example:
    >>> loaded = load("runs/digits-cnn")        # doctest: +SKIP
    >>> loaded.class_names[:3], loaded.preprocessing.input_size   # doctest: +SKIP
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from vislab.core.weights import load_weights, parameter_counts, save_weights, unwrap, write_text
from vislab.data.preprocess import Preprocessing

MODEL_FORMAT = "vislab-model/2"
READABLE_FORMATS = ("vislab-model/1", "vislab-model/2")  # /1 files (no task field) load as classification


from vislab.core.errors import RunError  # noqa: E402,F401  (re-exported: vislab.runs.RunError)


@dataclass
class Loaded:
    model: nn.Module
    preprocessing: Preprocessing
    class_names: list[str]
    spec: dict
    run_dir: Path | None
    task: object = None  # a vislab.tasks.Task; classification unless model.json names another

    def __post_init__(self):
        if self.task is None:
            from vislab.tasks import get_task

            # what the task stored with the model (a segmentation run's ignore index, loss)
            self.task = get_task(self.spec.get("task", "classification"), **self.spec.get("task_options", {}))


def versions() -> dict:
    """Package versions for model.json, read from the installed metadata: importing
    torchvision and timm only to ask would add about 2 s to every run."""
    from importlib.metadata import PackageNotFoundError, version

    import vislab

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {"vislab": vislab.__version__, "torch": torch.__version__, "torchvision": installed("torchvision"),
            "timm": installed("timm"), "python": platform.python_version()}


def write_model(run_dir: Path, model: nn.Module, preprocessing: Preprocessing, class_names, model_cfg,
                task=None, extra: dict | None = None) -> None:
    """model.safetensors + model.json (task, architecture, classes, preprocessing, versions).

    ``extra`` holds what a task stores with the model: a segmentation palette, per-class
    multi-label thresholds.
    """
    from dataclasses import asdict


    run_dir = Path(run_dir)
    save_weights(model, run_dir / "model.safetensors")
    spec = {
        "format": MODEL_FORMAT,
        "task": getattr(task, "name", "classification"),
        "name": model_cfg.name,
        # what was really built (e.g. efficientnet_lite0 --pretrained is timm's tf_efficientnet_lite0,
        # whose padding differs): load() rebuilds this, so outputs match training exactly
        "arch": getattr(unwrap(model), "vislab_name", model_cfg.name),
        "model": asdict(model_cfg),
        "num_classes": len(class_names),
        "num_outputs": int(task.num_outputs(class_names)) if task is not None else len(class_names),
        "in_chans": preprocessing.channels,
        "class_names": list(class_names),
        "preprocessing": preprocessing.to_dict(),
        "parameters": parameter_counts(unwrap(model))["total"],
        "versions": versions(),
        **(extra or {}),
    }
    text = json.dumps(spec, indent=2)
    write_text(run_dir / "model.json", text)


def read_spec(run_dir: Path) -> dict:
    path = Path(run_dir) / "model.json"
    if not Path(run_dir).is_dir():
        raise RunError(f"{run_dir}: no such run folder. Train one with `vislab train --out {run_dir}`.")
    if not path.is_file():
        raise RunError(f"{run_dir}: model.json is missing; is this a finished vislab run folder?")
    try:
        spec = json.loads(path.read_text())
    except ValueError as exc:
        raise RunError(f"{path}: not valid JSON ({exc}); the run did not finish writing it, or it was edited. "
                       "Retrain, or restore the file") from None
    if spec.get("format") not in READABLE_FORMATS:
        raise RunError(f"{path}: format {spec.get('format')!r} is not one this vislab reads "
                       f"({', '.join(READABLE_FORMATS)}); retrain it, or load it with the vislab that wrote it")
    spec.setdefault("task", "classification")
    return spec


def load(spec: str | Path, device: str = "cpu") -> Loaded:
    """A trained run folder, or ``imagenet:MODEL`` for a pretrained ImageNet classifier."""
    text = str(spec)
    if text.startswith("imagenet:"):
        from vislab.models.imagenet import load_imagenet_model

        model, preprocessing, class_names = load_imagenet_model(text.split(":", 1)[1])
        return Loaded(model.to(device).eval(), preprocessing, list(class_names),
                      {"name": text, "num_classes": len(class_names)}, None)
    from vislab.core.config import ModelConfig
    from vislab.models.build import build_model

    run_dir = Path(spec)
    model_spec = read_spec(run_dir)
    weights = run_dir / "model.safetensors"
    if not weights.is_file():
        raise RunError(f"{run_dir}: model.safetensors is missing; the run did not finish saving")
    preprocessing = Preprocessing.from_dict(model_spec["preprocessing"])
    # the stored input size, so layers sized at build time (lazy Dense) match the weights
    model_cfg = ModelConfig(**{**model_spec["model"], "name": model_spec.get("arch", model_spec["name"]),
                               "pretrained": False, "weights": None, "input_size": list(preprocessing.size)})
    outputs = model_spec.get("num_outputs", model_spec["num_classes"])
    model, _ = build_model(model_cfg, outputs, model_spec["in_chans"], load_pretrained=False)
    load_weights(model, weights)
    return Loaded(model.to(device).eval(), preprocessing, model_spec["class_names"], model_spec, run_dir)
