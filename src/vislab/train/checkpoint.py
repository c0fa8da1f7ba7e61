"""Training state for exact resume: RNG state and checkpoints/last.pt (written atomically)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from vislab.core.weights import atomic_write


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
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_training_state(path: Path) -> dict:
    from vislab.core.files import load_torch

    # Our own file, and still never unpickled beyond tensors and plain containers.
    state = load_torch(path, "a vislab training checkpoint", "the file is damaged (a full disk, a copy cut "
                       "short): retrain, or resume from a copy of the run folder")
    if not isinstance(state, dict) or "model" not in state:
        from vislab.core.files import BadFileError

        raise BadFileError(path, "is not a vislab training checkpoint (no model state in it)",
                           "give the checkpoints/last.pt a vislab run wrote")
    return state


def head_converged(state: dict) -> bool:
    """Whether the checkpoint's L-BFGS head had converged: its last epoch stopped short of the iterations
    an epoch allows. A checkpoint written before the flag was kept is read from the optimiser's count."""
    if "converged" in state:
        return bool(state["converged"])
    optimizer = state.get("optimizer") or {}
    groups = optimizer.get("param_groups") or [{}]
    if "max_iter" not in groups[0] or "line_search_fn" not in groups[0]:  # not torch.optim.LBFGS
        return False
    iterations = next(iter((optimizer.get("state") or {}).values()), {}).get("n_iter", 0)
    return int(iterations) < (int(state["epoch"]) + 1) * int(groups[0]["max_iter"])
