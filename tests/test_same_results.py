"""Same seed, same numbers as before the task layer: fingerprints recorded from commit 890191b.

benchmarks/check_same_results.py trains two fixed-seed CPU runs (fp32, one thread) and
hashes model.safetensors and history.csv (without wall-clock seconds). The values below
were printed by the code before the task-layer refactor, on the CPU model named beside
them; kernels differ between CPU models, so another CPU compares against the old code
itself instead: ``python benchmarks/check_same_results.py --base 890191b``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "check_same_results.py"
RECORDED = {  # (CPU model, torch) -> fingerprints from 890191b (history without seconds and lr)
    ("AMD EPYC", "2.14.1"): {
        "fast-fmnist": {"weights": "ebbb7ea2051346d1551359ac780f623c6c13a3725b29b29512f5bae008655e35",
                        "history": "f9508f86ad9fddfdd8f8eb608dbd4c54e14c0b6f962d9ea746dba993a13a787e", "epochs": 1},
        "chollet-digits": {"weights": "32a310419ca940d2299c78bd30823cd33cfb405f886cff853fd74e12ae2991b2",
                           "history": "dec9fbb8d98ee292014fa008617c830c88cd82314aab7615d662fc238828fa96",
                           "epochs": 2},
    },
}


def _cpu_model() -> str:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from check_same_results import cpu_model
    finally:
        sys.path.pop(0)
    return cpu_model()


def test_fixed_seed_runs_match_the_code_before_the_task_layer():
    key = (_cpu_model(), torch.__version__.split("+")[0])
    if key not in RECORDED:
        pytest.skip(f"fingerprints were recorded on {list(RECORDED)}, this is {key}; "
                    "run benchmarks/check_same_results.py --base 890191b here")
    runs = [name for name in RECORDED[key]
            if name != "fast-fmnist" or Path("/usr/share/datasets/fashion-mnist").is_dir()]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--child", "--runs", *runs], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in runs:
        assert got[name] == RECORDED[key][name], f"{name}: weights or history changed"
