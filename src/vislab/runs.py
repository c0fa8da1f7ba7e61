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
from typing import NamedTuple

import torch
import torch.nn as nn

from vislab.core.config import DEFAULT_TASK
from vislab.core.files import load_safetensors, read_json, read_yaml, run_folder_error, similar_folder
from vislab.core.weights import parameter_counts, save_weights, state_mismatch, unwrap, write_text
from vislab.data.preprocess import Preprocessing

MODEL_FORMAT = "vislab-model/2"
READABLE_FORMATS = ("vislab-model/1", "vislab-model/2")  # /1 files (no task field) load as classification
# the key every version of vislab has written last in a run's config.yaml
LAST_CONFIG_KEY = "out"


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
            self.task = task_from_spec(self.spec)


def task_from_spec(spec: dict):
    """The task a model was trained for, as model.json (or an exported graph's metadata) describes it: its
    options (a segmentation run's ignore index, loss), then the state it stored (multi-label thresholds, a
    palette)."""
    from vislab.tasks import get_task

    task = get_task(spec.get("task"), **spec.get("task_options", {}))
    task.restore(spec)
    return task


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
    counts = parameter_counts(unwrap(model))
    spec = {
        "format": MODEL_FORMAT,
        "task": getattr(task, "name", DEFAULT_TASK),
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
        "parameters": counts["total"],
        # those training left trainable (the rest frozen: --freeze backbone): `vislab summary RUN` reports them
        "trainable_parameters": counts["trainable"],
        "versions": versions(),
        # what the architecture needs to be rebuilt without its source (a Hugging Face config)
        **getattr(unwrap(model), "vislab_spec", {}),
        **(extra or {}),
    }
    text = json.dumps(spec, indent=2)
    write_text(run_dir / "model.json", text)


def read_config(run_dir: Path):
    """The resolved :class:`~vislab.core.config.Config` a run folder was trained with (its config.yaml)."""
    from vislab.core.config import config_from_dict

    if not Path(run_dir).is_dir():
        raise _a_file_here(run_dir) or RunError(f"{run_dir}: no such run folder{similar_folder(run_dir)}; give a "
                                                "folder written by `vislab train --out DIR`")
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise RunError(f"{run_dir}: config.yaml is missing, so the run's data and settings are unknown; "
                       "is it a folder written by `vislab train`?")
    data = read_yaml(path, "a run's config (YAML)", "restore the config.yaml the run wrote")
    if not isinstance(data, dict):
        raise RunError(f"{path}: not a run's config (a mapping of sections); restore the config.yaml the run wrote")
    if LAST_CONFIG_KEY not in data:
        # every vislab writes the whole config, `out` last: a file without it was cut short (a full disk, a
        # copy stopped half-way), and its missing keys would silently become defaults
        raise RunError(f"{path}: incomplete, its last key ({LAST_CONFIG_KEY}:) is missing, so the file was cut short "
                       "or edited; restore the config.yaml the run wrote")
    cfg = config_from_dict(data)
    if "drop_last" not in (data.get("train") or {}) and not cfg.model.cache_features:
        # written before train.drop_last existed, when every epoch left its short batch out (the
        # cached-features path always trained on it): the config it was trained with, so resume stays exact
        cfg.train.drop_last = True
    return cfg


def _a_file_here(run_dir) -> RunError | None:
    """Where a run folder was asked for and a file is: say what the file is, not that nothing is there."""
    return run_folder_error(run_dir) if Path(run_dir).is_file() else None


def read_spec(run_dir: Path) -> dict:
    path = Path(run_dir) / "model.json"
    if not Path(run_dir).is_dir():
        raise _a_file_here(run_dir) or RunError(
            f"{run_dir}: no such run folder{similar_folder(run_dir)}. Give a folder written by `vislab train --out DIR`, "
            "imagenet:MODEL for a pretrained ImageNet classifier (e.g. imagenet:efficientnet_lite0), "
            "or hf:ORG/NAME (or hf:FOLDER saved with save_pretrained) for a Hugging Face one")
    if not path.is_file():
        raise RunError(unfinished_run(run_dir) or f"{run_dir}: model.json is missing; is this a finished vislab run "
                       "folder?")
    spec = read_json(path, "a vislab model description (JSON)", "the run did not finish writing it, or it was "
                     "edited: retrain, or restore the file")
    if not isinstance(spec, dict):
        raise RunError(f"{path}: not a vislab model description (a JSON object); retrain, or restore the file")
    if spec.get("format") not in READABLE_FORMATS:
        raise RunError(f"{path}: format {spec.get('format')!r} is not one this vislab reads "
                       f"({', '.join(READABLE_FORMATS)}); retrain it, or load it with the vislab that wrote it")
    spec.setdefault("task", DEFAULT_TASK)  # written before tasks were recorded
    return spec


def unfinished_run(run_dir) -> str | None:
    """Why a run folder has no model yet, when training began there and never finished (it was stopped, or
    is still running): no model.json, and its checkpoints/last.pt (the message names the epochs trained and the
    command that continues it) or, stopped before the first epoch ended, only the config.yaml `vislab train`
    writes before training (the command that starts it again). None for any other folder."""
    run_dir = Path(run_dir)
    if (run_dir / "model.json").exists():
        return None
    if not (run_dir / "checkpoints" / "last.pt").is_file():
        return _first_epoch_unfinished(run_dir)
    done, planned = _epochs_trained(run_dir), _epochs_planned(run_dir)
    if done is None:
        trained = "training stopped"
    elif planned is not None:
        trained = f"training stopped after epoch {done} of {planned}"
    else:
        trained = f"training stopped after epoch {done}"
    return (f"{run_dir}: an unfinished run ({trained}, no model.json yet); continue it with "
            f"`vislab train --resume {run_dir}` (add --epochs N to end at epoch N), or wait if it is still training")


def _first_epoch_unfinished(run_dir: Path) -> str | None:
    """A run stopped before its first epoch ended (killed, or the power went): `vislab train` had written its
    config.yaml, whole and naming this folder as ``out``, but no checkpoint yet."""
    if not _started_here(run_dir):
        return None
    return (f"{run_dir}: an unfinished run (training stopped before its first epoch ended, no checkpoint or "
            f"model.json yet); start it again with {_train_again(run_dir)}, or delete the folder; or wait if it "
            "is still training")


def _started_here(run_dir: Path) -> bool:
    """Whether ``run_dir/config.yaml`` is the one `vislab train` wrote for a run in this folder: a whole config
    (its sections, ``out`` last) whose ``out`` is this folder, not a config file kept or copied there."""
    from vislab.core.files import BadFileError

    if not (run_dir / "config.yaml").is_file():
        return False
    try:
        data = read_yaml(run_dir / "config.yaml", "a run's config (YAML)", "")
    except BadFileError:
        return False
    if not isinstance(data, dict) or list(data)[-1:] != [LAST_CONFIG_KEY]:
        return False
    if not all(isinstance(data.get(section), dict) for section in ("data", "model", "train")):
        return False
    out = data[LAST_CONFIG_KEY]
    if not isinstance(out, str) or not out:
        return False
    here = run_dir.resolve()
    # the name alone where `out` was relative to another working folder
    return Path(out).expanduser().resolve() == here or Path(out).name == here.name


def _train_again(run_dir: Path) -> str:
    """The command that trains the run from its start in its own folder: its config.yaml as the config where
    `vislab train --config` takes it as it is (a --time-budget run's, which also names its epochs, it refuses)."""
    import warnings

    from vislab.core.config import resolve_config
    from vislab.core.errors import UserError

    config = run_dir / "config.yaml"
    try:
        with warnings.catch_warnings():  # a check of the config, not a run: its warnings are for `vislab train`
            warnings.simplefilter("ignore")
            resolve_config(config, {"out": str(run_dir)}, default_recipe="auto")
    except UserError:
        return f"`vislab train ... --out {run_dir}` (with the options it was started with)"
    return f"`vislab train --config {config} --out {run_dir}`"


class HistoryTotals(NamedTuple):
    """What :func:`history_totals` reads from a history.csv."""

    rows: int
    epochs: int | None
    seconds: float | None


def history_totals(path: Path) -> HistoryTotals:
    """What a run's history.csv records: its epoch rows, the highest ``epoch`` (a resumed run may repeat a
    row; None when a row's epoch is not a whole number or no row has one) and the summed ``seconds`` (None
    without that column, or when a row's is not a number). A file without rows has 0 epochs in 0 seconds.

    Raises:
        BadFileError: the file cannot be read as a CSV.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "history.csv"
        >>> _ = path.write_text("epoch,seconds\\n1,2.5\\n2,2.0\\n2,2.25\\n")
        >>> history_totals(path)
        HistoryTotals(rows=3, epochs=2, seconds=6.75)
    """
    from vislab.core.files import read_csv_rows

    lines = [line for line in read_csv_rows(path, "a training history (CSV)", "restore the history.csv the run "
                                            "wrote") if line]
    rows = [dict(zip(lines[0], line)) for line in lines[1:]] if lines else []
    if not rows:
        return HistoryTotals(0, 0, 0.0)
    return HistoryTotals(len(rows), _highest_epoch(rows), _summed_seconds(rows))


def _highest_epoch(rows: list[dict]) -> int | None:
    try:
        return max(int(float(row["epoch"])) for row in rows if row.get("epoch"))
    except (ValueError, OverflowError):  # no epoch, a word, or "inf" (a float int() refuses)
        return None


def _summed_seconds(rows: list[dict]) -> float | None:
    if "seconds" not in rows[0]:
        return None
    try:
        return round(sum(float(row["seconds"]) for row in rows if row.get("seconds")), 3)
    except ValueError:
        return None


def _epochs_trained(run_dir: Path) -> int | None:
    """The last epoch history.csv records (the checkpoint may be one behind; resume trims the file to it)."""
    from vislab.core.files import BadFileError

    path = run_dir / "history.csv"
    if not path.is_file():
        return 0
    try:
        return history_totals(path).epochs  # a damaged history only leaves the count out
    except BadFileError:
        return None


def _epochs_planned(run_dir: Path) -> int | None:
    from vislab.core.files import BadFileError

    try:
        data = read_yaml(run_dir / "config.yaml", "a run's config (YAML)", "")
    except BadFileError:
        return None
    train = data.get("train") if isinstance(data, dict) else None
    epochs = train.get("epochs") if isinstance(train, dict) else None
    return epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else None


def load(spec: str | Path, device: str = "cpu", weights: str | Path | None = None) -> Loaded:
    """A trained run folder, ``imagenet:MODEL`` (a pretrained ImageNet classifier) or ``hf:NAME``
    (a Hugging Face image classifier with its own labels; NAME is a hub id or a save_pretrained folder).

    Args:
        weights: local weights. For ``imagenet:``/``hf:``, the file or folder to read instead of
            downloading (offline machines); for a run folder, a safetensors file of the same model
            (e.g. ``RUN/checkpoints/best.safetensors``) instead of ``model.safetensors``.
    """
    text = str(spec)
    if text.startswith("imagenet:"):
        from vislab.models.imagenet import load_imagenet_model

        model, preprocessing, class_names = load_imagenet_model(text.split(":", 1)[1], weights=weights)
        return Loaded(model.to(device).eval(), preprocessing, list(class_names),
                      {"name": text, "num_classes": len(class_names)}, None)
    if text.startswith("hf:"):
        return _load_hf(text, device, weights)
    from vislab.core.config import ModelConfig
    from vislab.models.build import build_model

    run_dir = Path(spec)
    model_spec = read_spec(run_dir)
    weights_file = Path(weights) if weights else run_dir / "model.safetensors"
    if not weights_file.exists():
        if weights:
            raise RunError(f"--weights {weights_file}: no such file; give a safetensors file of this run's "
                           f"model, e.g. {run_dir / 'checkpoints' / 'best.safetensors'}")
        raise RunError(f"{run_dir}: model.safetensors is missing; the run did not finish saving")
    if weights_file.suffix != ".safetensors":
        raise RunError(f"--weights {weights_file}: a run folder's model reads safetensors files only (vislab "
                       "never unpickles); give e.g. checkpoints/best.safetensors")
    preprocessing = Preprocessing.from_dict(model_spec["preprocessing"])
    # the stored input size, so layers sized at build time (lazy Dense) match the weights
    model_cfg = ModelConfig(**{**model_spec["model"], "name": model_spec.get("arch", model_spec["name"]),
                               "pretrained": False, "weights": None, "input_size": list(preprocessing.size)})
    if "hf_config" in model_spec:  # the run holds the architecture: its source folder or hub id is not needed
        model_cfg.options = {**model_cfg.options, "hf_config": model_spec["hf_config"],
                             "hf_processor": model_spec.get("hf_processor") or {}}
    outputs = model_spec.get("num_outputs", model_spec["num_classes"])
    model, _ = build_model(model_cfg, outputs, model_spec["in_chans"], load_pretrained=False)
    fix = (f"give a safetensors file saved by this run, e.g. {run_dir / 'checkpoints' / 'best.safetensors'}"
           if weights else "the run did not finish saving it, or it was changed: retrain, or restore the file")
    state = load_safetensors(weights_file, "a safetensors weights file", fix)
    flag = "--weights " if weights else ""
    mismatch = state_mismatch(state, unwrap(model).state_dict())
    if mismatch:
        raise RunError(f"{flag}{weights_file} does not fit {run_dir}'s model ({mismatch}); {fix}")
    try:
        unwrap(model).load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise RunError(f"{flag}{weights_file} does not fit {run_dir}'s model "
                       f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); {fix}") from None
    return Loaded(model.to(device).eval(), preprocessing, model_spec["class_names"], model_spec, run_dir)


def _load_hf(text: str, device: str, weights) -> Loaded:
    """``hf:NAME``: a Hugging Face image classifier as it was published (its head, its labels)."""
    from vislab.models.build import model_preprocessing
    from vislab.models.pretrained import create_hf_model

    name = text[3:]
    model = create_hf_model(name, num_classes=None, in_chans=3, pretrained=True, weights=weights)
    config = model.hf.config
    id2label = getattr(config, "id2label", None) or {}
    class_names = [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(model.num_classes)]
    return Loaded(model.to(device).eval(), model_preprocessing(model, 3), class_names,
                  {"name": text, "num_classes": len(class_names)}, None)
