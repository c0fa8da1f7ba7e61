"""Device and precision policy, shared by training, inference and feature caching.

``resolve_device`` turns ``auto|cpu|cuda|mps`` into a ``torch.device`` (a clear
:class:`~vislab.core.errors.ConfigError` when the device is not there);
``resolve_precision`` turns ``auto|fp32|bf16|fp16`` into an autocast dtype or
``None`` for plain fp32; ``autocast_context`` is the context the loops enter.

Example:
    >>> import torch
    >>> resolve_device("cpu")
    device(type='cpu')
    >>> resolve_precision("fp32", torch.device("cpu")) is None
    True
"""

from __future__ import annotations

import contextlib
import random
import warnings
from pathlib import Path

import numpy as np
import torch

from vislab.core.errors import ConfigError, DeviceError  # noqa: F401


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda: no CUDA device is visible to PyTorch; use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError("--device mps: no Apple-silicon GPU (MPS) is available here; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise DeviceError(f"--device {name!r} is not a device; use auto, cpu, cuda or mps") from None


def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls/convolutions run natively in oneDNN."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cuda_bf16_native(device=None) -> bool:
    """Whether the GPU computes in bf16 natively (compute capability 8.0+, Ampere on).

    ``torch.cuda.is_bf16_supported()`` also says yes where bf16 is only emulated (T4,
    V100: no bf16 cuDNN convolutions); those GPUs train in fp16 with loss scaling.
    """
    return torch.cuda.get_device_capability(device)[0] >= 8 and torch.cuda.is_bf16_supported()


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32, from flags alone (``auto``: bf16 where the
    device runs it natively). The training loop, the predictor and feature extraction instead
    time ``auto``'s candidates (:mod:`vislab.core.measure`); this is what a run trained before
    measured choices used, and what a resumed one of those keeps."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if cuda_bf16_native() else torch.float16
    if device.type == "cpu" and cpu_has_bf16():
        return torch.bfloat16
    return None


def warn_if_slow_precision(precision: str, device: torch.device) -> None:
    """fp16 on a CPU is allowed (tests of loss scaling use it) but said to be slow, with the reason: once a
    process, since a run warns from this line (Python's default filter) when it trains and again when it
    evaluates."""
    if precision == "fp16" and device.type == "cpu":
        from vislab.core.measure import fp16_on_cpu_reason

        warnings.warn(f"--precision fp16 on the CPU: {fp16_on_cpu_reason()}", UserWarning, stacklevel=1)


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU for a module with neither)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")
