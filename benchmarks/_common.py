"""Shared bits of the benchmark scripts: machine/version records and one-JSON-line output.

Every benchmark prints one JSON object per measurement on stdout, with ``machine``
(CPU model, usable cores, the kernels' effective ISA, load average when it started: a
loaded machine inflates every time) and ``versions``, so a line stands on its own when pasted elsewhere.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

FMNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist
REPO = Path(__file__).resolve().parents[1]


#: the CPU classes one machine can stand in for, by limiting the kernels' instruction sets
CPU_CLASSES = {
    "native": {},
    "avx512_core": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},  # AVX-512 without BF16: bf16 emulated in oneDNN
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},  # an AVX2-only CPU
}
ISA_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")


def class_env(limits: dict) -> dict:
    """This process's environment with ``limits`` in place of any ISA limit it had, and this
    checkout's vislab importable: for a child process that runs under one CPU class."""
    env = {k: v for k, v in os.environ.items() if k not in ISA_VARIABLES}
    env.update(limits, PYTHONPATH=str(REPO / "src"))
    return env


def kernel_isa() -> dict:
    """The instruction sets the CPU kernels use (vislab.core.measure.kernel_isa); None in an
    interpreter without torch (keras_seeds.py runs in the TensorFlow venv)."""
    try:
        from vislab.core.measure import kernel_isa as isa
    except ImportError:
        return None

    return isa()


def machine() -> dict:
    """CPU model, usable cores, bf16 support, the kernels' effective ISA and the 1-minute load
    average (0 = quiet)."""
    cpu, flags = platform.processor() or platform.machine(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("", platform.machine()):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cores": usable, "avx512_bf16": "avx512_bf16" in flags or "amx_bf16" in flags,
            "isa": kernel_isa(),
            "load_1min": round(load, 2) if load is not None else None, "system": platform.system(),
            "python": platform.python_version()}


def versions() -> dict:
    import numpy
    import torch

    import vislab

    out = {"vislab": vislab.__version__, "torch": torch.__version__, "numpy": numpy.__version__}
    try:
        import torchvision

        out["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    return out


def emit(record: dict) -> None:
    """One measurement = one JSON line on stdout, flushed so a pipe sees it at once."""
    print(json.dumps(record), flush=True)


def vislab_command() -> list[str]:
    """``python -m vislab`` of this interpreter: no PATH lookups, same venv as the benchmark."""
    return [sys.executable, "-m", "vislab"]


def fmnist_available(data_dir: str = FMNIST_DIR) -> bool:
    return Path(data_dir).is_dir()
