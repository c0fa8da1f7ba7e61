"""Same seed, same numbers, on this machine.

benchmarks/check_same_results.py trains a fixed-seed CPU run (fp32, one thread) and hashes
model.safetensors and history.csv (without wall-clock seconds). Two such runs in fresh
processes must give the same hashes: a fixed seed reproduces a run bit for bit on the machine
it ran on. Hashes are not compared across machines: kernels differ between CPU generations
(and instruction-set limits), so bit-exact weights are not portable. To check that a change
leaves the numbers as they were, compare against the old code on the same machine:
``python benchmarks/check_same_results.py --base COMMIT``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "check_same_results.py"


def _fingerprints(runs: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--child", "--runs", *runs], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_fixed_seed_run_repeats_bit_for_bit_on_this_machine():
    first, second = _fingerprints(["chollet-digits"]), _fingerprints(["chollet-digits"])
    assert first["chollet-digits"]["epochs"] == 2
    assert first == second, "the same seed gave other weights or history in a fresh process"
