"""Keras-style ``model.summary()``: layers, output shapes, trainable / non-trainable parameters."""

from __future__ import annotations


import torch
import torch.nn as nn

from vislab.core.weights import parameter_counts


def _shape(value) -> str:
    if isinstance(value, torch.Tensor):
        return "x".join(map(str, value.shape[1:]))
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return _shape(value[0])
    return "?"


def summarize(model: nn.Module, input_size: tuple[int, int, int], depth: int = 3,
              trainable: int | None = None) -> str:
    """Table of modules down to ``depth`` with output shapes from one dummy forward pass.

    ``trainable``: the trainable parameter count to report instead of the parameters that now
    require gradients (a run folder's: those its training left unfrozen).

    Example:
        >>> from vislab.models import create_model
        >>> print(summarize(create_model("mlp", 10, 1, hidden=[32]), (1, 28, 28)).splitlines()[-3])
        Total params: 25,450
    """
    shapes: dict[str, str] = {}
    ran: dict[str, str] = {}  # every module that ran, in the order their forward passes ended
    hooks = []
    for name, module in model.named_modules():
        if name:  # every depth: a module listed whose own hook never fires takes its shape from these
            def record(mod, inp, out, name=name):
                ran.setdefault(name, _shape(out))  # returns None: a hook's return value replaces the output

            hooks.append(module.register_forward_hook(record))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            parameter = next(model.parameters(), None)
            output = model(torch.zeros(1, *input_size, device=parameter.device if parameter is not None else None))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    names = [name for name, _ in model.named_modules() if name and name.count(".") < depth]
    for name in names:
        if name in ran:
            shapes[name] = ran[name]
        else:
            # a container whose children the model calls one by one (FeatureHeadNet's head runs
            # head[:-1] then head[-1]): its output is that of its descendant that finished last
            inner = [shape for other, shape in ran.items() if other.startswith(name + ".")]
            if inner:
                shapes[name] = inner[-1]
    rows = [("Layer (type)", "Output shape", "Param #")]
    for name, module in model.named_modules():
        if name not in shapes:
            continue
        own = sum(p.numel() for p in module.parameters(recurse=not any(True for _ in module.children())))
        if any(True for _ in module.children()):
            own = sum(p.numel() for p in module.parameters())
        indent = "  " * name.count(".")
        rows.append((f"{indent}{name} ({type(module).__name__})", shapes[name], f"{own:,}"))
    counts = parameter_counts(model)
    total = counts["total"]
    trainable = counts["trainable"] if trainable is None else trainable
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    line = "-" * (sum(widths) + 6)
    out = [f"Input: {'x'.join(map(str, input_size))}", line]
    for i, row in enumerate(rows):
        out.append(f"{row[0]:<{widths[0]}}   {row[1]:<{widths[1]}}   {row[2]:>{widths[2]}}")
        if i == 0:
            out.append(line)
    out += [line, f"Output: {_shape(output)}", f"Total params: {total:,}", f"Trainable params: {trainable:,}",
            f"Non-trainable params: {total - trainable:,}"]
    return "\n".join(out)


def model_summary(model: str, num_classes: int = 10, in_chans: int | None = None, input_size=None,
                  depth: int = 3, weights=None) -> str:
    """Summary of a model name, built fresh (a run folder's model: :func:`vislab.api.summary`);
    ``weights``: a local weights file or folder loaded into it (an error says if it does not fit)."""
    from vislab.core.config import ModelConfig
    from vislab.models.build import build_model
    from vislab.models.registry import model_defaults, vislab_models

    from vislab.core.config import input_size_pair

    size = None if not input_size else input_size_pair(input_size)
    if in_chans is None:  # the network's own default (the seeds' grey nets: 1), else RGB
        in_chans = model_defaults(model)["in_chans"] if model in vislab_models() else 3
    built, pre = build_model(ModelConfig(name=model, input_size=size, weights=weights), num_classes, in_chans)
    return summarize(built, pre.input_size, depth)
