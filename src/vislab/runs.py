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

from vislab.data.preprocess import Preprocessing

MODEL_FORMAT = "vislab-model/1"


class RunError(FileNotFoundError):
    """Not a usable run folder; the message says what is missing and how to get it."""


@dataclass
class Loaded:
    model: nn.Module
    preprocessing: Preprocessing
    class_names: list[str]
    spec: dict
    run_dir: Path | None


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


def parameter_counts(model: nn.Module) -> dict:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable, "non_trainable": total - trainable}


def write_model(run_dir: Path, model: nn.Module, preprocessing: Preprocessing, class_names, model_cfg) -> None:
    """model.safetensors + model.json (architecture, classes, preprocessing, versions)."""
    from dataclasses import asdict

    from vislab.train.checkpoint import _atomic, save_weights, unwrap

    run_dir = Path(run_dir)
    save_weights(model, run_dir / "model.safetensors")
    spec = {
        "format": MODEL_FORMAT,
        "name": model_cfg.name,
        # what was really built (e.g. efficientnet_lite0 --pretrained is timm's tf_efficientnet_lite0,
        # whose padding differs): load() rebuilds this, so outputs match training exactly
        "arch": getattr(unwrap(model), "vislab_name", model_cfg.name),
        "model": asdict(model_cfg),
        "num_classes": len(class_names),
        "in_chans": preprocessing.channels,
        "class_names": list(class_names),
        "preprocessing": preprocessing.to_dict(),
        "parameters": parameter_counts(unwrap(model))["total"],
        "versions": versions(),
    }
    text = json.dumps(spec, indent=2)
    _atomic(run_dir / "model.json", lambda tmp: Path(tmp).write_text(text))


def read_spec(run_dir: Path) -> dict:
    path = Path(run_dir) / "model.json"
    if not Path(run_dir).is_dir():
        raise RunError(f"{run_dir}: no such run folder. Train one with `vislab train --out {run_dir}`.")
    if not path.is_file():
        raise RunError(f"{run_dir}: model.json is missing; is this a finished vislab run folder?")
    spec = json.loads(path.read_text())
    if spec.get("format") != MODEL_FORMAT:
        raise RunError(f"{path}: format {spec.get('format')!r} is not {MODEL_FORMAT!r}")
    return spec


def load(spec: str | Path, device: str = "cpu") -> Loaded:
    """A trained run folder, or ``imagenet:MODEL`` for a pretrained ImageNet classifier."""
    text = str(spec)
    if text.startswith("imagenet:"):
        from vislab.models.imagenet import load_imagenet_model

        model, preprocessing, class_names = load_imagenet_model(text.split(":", 1)[1])
        return Loaded(model.to(device).eval(), preprocessing, list(class_names),
                      {"name": text, "num_classes": len(class_names)}, None)
    from vislab.config import ModelConfig
    from vislab.models.build import build_model
    from vislab.train.checkpoint import load_weights

    run_dir = Path(spec)
    model_spec = read_spec(run_dir)
    weights = run_dir / "model.safetensors"
    if not weights.is_file():
        raise RunError(f"{run_dir}: model.safetensors is missing; the run did not finish saving")
    preprocessing = Preprocessing.from_dict(model_spec["preprocessing"])
    # the stored input size, so layers sized at build time (lazy Dense) match the weights
    model_cfg = ModelConfig(**{**model_spec["model"], "name": model_spec.get("arch", model_spec["name"]),
                               "pretrained": False, "weights": None, "input_size": list(preprocessing.size)})
    model, _ = build_model(model_cfg, model_spec["num_classes"], model_spec["in_chans"], load_pretrained=False)
    load_weights(model, weights)
    return Loaded(model.to(device).eval(), preprocessing, model_spec["class_names"], model_spec, run_dir)
