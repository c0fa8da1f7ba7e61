"""Weight I/O: atomic writes, safetensors save/load, unwrapping, parameter counts.

Every file vislab writes for a model goes through :func:`atomic_write`: a temporary
file in the same folder, fsync, then ``os.replace``, so a kill leaves the old file or
the new one, never half of one. Weights are safetensors (no pickle).

Example:
    >>> import tempfile, torch, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "w.safetensors"
    >>> save_weights(torch.nn.Linear(2, 1), path)
    >>> model = torch.nn.Linear(2, 1); load_weights(model, path)
    >>> parameter_counts(model)["total"]
    3
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then os.replace: a kill leaves old or new.

    The file gets the mode any new file gets (0666 less the umask): ``mkstemp``'s 0600
    would make a run folder's model files unreadable to the rest of a team.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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


def parameter_counts(model: torch.nn.Module) -> dict:
    """Total, trainable and frozen parameter counts of a module (wrappers looked through)."""
    params = list(unwrap(model).parameters())
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return {"total": total, "trainable": trainable, "non_trainable": total - trainable}
