"""Weight I/O: atomic writes, safetensors save/load, unwrapping, parameter counts.

Every file vislab writes for a model goes through :func:`atomic_write`: a hidden partial
file in the same folder, fsync, then ``os.replace``, so a kill leaves the old file or
the new one, never half of one (a partial left by a kill is removed by a later write there). Weights are safetensors (no pickle).

Example:
    >>> import tempfile, torch, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "w.safetensors"
    >>> save_weights(torch.nn.Linear(2, 1), path)
    >>> model = torch.nn.Linear(2, 1); load_weights(model, path)
    >>> parameter_counts(model)["total"]
    3
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file


def atomic_write(path: Path, write) -> None:
    """``write(partial)`` writes the file; it then reaches the disk and takes ``path``'s name, so a kill or a
    power cut leaves the old file or the new one (:func:`vislab.core.files.written_whole`, ``durable``: the
    file also gets the mode any new file gets, 0666 less the umask, readable by the rest of a team)."""
    from vislab.core.files import written_whole

    with written_whole(path, durable=True) as partial:
        write(str(partial))


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP / torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def save_weights(model: torch.nn.Module, path: Path, metadata: dict | None = None) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in unwrap(model).state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata={k: str(v) for k, v in (metadata or {}).items()}))


def load_weights(model: torch.nn.Module, path: Path, strict: bool = True) -> None:
    from vislab.core.files import load_safetensors

    state = load_safetensors(path, "a safetensors weights file", "give a safetensors file saved from this model")
    unwrap(model).load_state_dict(state, strict=strict)


def state_mismatch(state: dict, target: dict, optional: set | frozenset = frozenset()) -> str | None:
    """Why the tensors ``state`` do not fit a model whose state dict is ``target``, as one phrase (shape
    mismatches, model tensors missing from ``state`` (``optional`` ones aside), tensors the model lacks,
    each counted with a few names), or None when they fit.

    Example:
        >>> a, b = torch.nn.Linear(2, 3).state_dict(), torch.nn.Linear(2, 4).state_dict()
        >>> state_mismatch(a, b)
        "2 shape mismatches (e.g. ['weight: file (3, 2) vs model (4, 2)', 'bias: file (3,) vs model (4,)'])"
    """
    mismatched = [f"{k}: file {tuple(v.shape)} vs model {tuple(target[k].shape)}"
                  for k, v in state.items() if k in target and v.shape != target[k].shape]
    missing = sorted(set(target) - set(state) - set(optional))
    unexpected = sorted(set(state) - set(target))
    parts = []
    if mismatched:
        parts.append(f"{len(mismatched)} shape mismatches (e.g. {mismatched[:3]})")
    if missing:
        parts.append(f"{len(missing)} model tensors not in the file (e.g. {missing[:4]})")
    if unexpected:
        parts.append(f"{len(unexpected)} file tensors the model lacks (e.g. {unexpected[:4]})")
    return "; ".join(parts) or None


def parameter_counts(model: torch.nn.Module) -> dict:
    """Total, trainable and frozen parameter counts of a module (wrappers looked through)."""
    params = list(unwrap(model).parameters())
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return {"total": total, "trainable": trainable, "non_trainable": total - trainable}
