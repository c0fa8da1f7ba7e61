"""Atomic writes of weights (safetensors) and training state (exact resume)."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file


def _atomic(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then os.replace: a kill leaves old or new."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_weights(model: torch.nn.Module, path: Path, metadata: dict | None = None) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in unwrap(model).state_dict().items()}
    _atomic(path, lambda tmp: save_file(state, tmp, metadata={k: str(v) for k, v in (metadata or {}).items()}))


def load_weights(model: torch.nn.Module, path: Path, strict: bool = True) -> None:
    unwrap(model).load_state_dict(load_file(str(path)), strict=strict)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP / torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def rng_state() -> dict:
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state()[1].tolist(),  # plain types: loadable with weights_only=True
        "numpy_pos": int(np.random.get_state()[2]),
        "python": repr(random.getstate()),
        # only where CUDA is in use: asking would start a CUDA context for a CPU run on a GPU machine
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }


def set_rng_state(state: dict) -> None:
    import ast

    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", np.array(state["numpy"], dtype=np.uint32), state["numpy_pos"], 0, 0.0))
    random.setstate(ast.literal_eval(state["python"]))
    if state.get("cuda") and torch.cuda.is_available():
        # fewer GPUs visible than at saving (CUDA_VISIBLE_DEVICES): restore those there are
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)


def save_training_state(path: Path, state: dict) -> None:
    _atomic(path, lambda tmp: torch.save(state, tmp))


def load_training_state(path: Path) -> dict:
    # Our own file, and still never unpickled beyond tensors and plain containers.
    return torch.load(path, map_location="cpu", weights_only=True)
