"""Benchmark: the examples' smoke floors, over seeds and CPU classes.

Each example's ``--smoke`` run checks its numbers against floors (``check NAME: VALUE >= FLOOR``
lines). A floor is only safe when it holds with a margin on every machine the tests run on:
kernels differ between CPU generations, and a tiny smoke set magnifies the difference. This
runs the chosen examples' smoke runs for each ``--seeds`` value under each CPU class this
machine can emulate (the same three classes as ``bench_auto_choice.py``), and prints one JSON
line per run (every check's value and floor) and one ``floor`` line per check: the lowest value
seen, the floor, and the margin between them.

Usage:
    python benchmarks/bench_smoke_floors.py --examples cats_vs_dogs.py --seeds 0 1 2 3 4
    python benchmarks/bench_smoke_floors.py                     # every example, seeds 0 1 2
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CPU_CLASSES, REPO, class_env, emit, machine, versions  # noqa: E402

CLASSES = CPU_CLASSES
CHECK = re.compile(r"^check (?P<what>.+?): (?P<value>[-\d.e+]+|None) (?P<op>>=|<=) (?P<floor>[-\d.e+]+)\s+(ok|FAILED)$",
                   re.M)


def examples() -> list[str]:
    return sorted(p.name for p in (REPO / "examples").glob("*.py") if not p.name.startswith("_"))


def smoke(script: str, seed: int, limits: dict, out: Path) -> tuple[int, list[dict], str]:
    env = class_env(limits)
    proc = subprocess.run([sys.executable, str(REPO / "examples" / script), "--smoke", "--seed", str(seed),
                           "--out", str(out)], capture_output=True, text=True, env=env, cwd=out.parent,
                          timeout=1800)
    checks = [{"what": m["what"], "value": None if m["value"] == "None" else float(m["value"]), "op": m["op"],
               "floor": float(m["floor"])} for m in CHECK.finditer(proc.stdout)]
    return proc.returncode, checks, (proc.stdout + proc.stderr)[-1500:]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", nargs="+", default=None, help="script names (default: every example)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--classes", nargs="+", choices=list(CLASSES), default=list(CLASSES))
    args = parser.parse_args(argv)
    known = examples()
    chosen = [name if name.endswith(".py") else f"{name}.py" for name in args.examples or known]
    unknown = [name for name in chosen if name not in known]
    if unknown:
        parser.error(f"no such example: {', '.join(unknown)}; choose from {', '.join(known)}")
    info, seen = versions(), {}
    with tempfile.TemporaryDirectory() as tmp:
        for script in chosen:
            for name in args.classes:
                for seed in args.seeds:
                    out = Path(tmp) / f"{script}-{name}-{seed}"
                    code, checks, tail = smoke(script, seed, CLASSES[name], out)
                    emit({"bench": "smoke_floors", "kind": "run", "example": script, "class": name, "seed": seed,
                          "exit": code, "checks": checks, **({"tail": tail} if code else {}),
                          "machine": {**machine(), "isa_limits": CLASSES[name]}, "versions": info})
                    for check in checks:
                        seen.setdefault((script, check["what"], check["op"], check["floor"]), []).append(
                            (check["value"], name, seed))
    for (script, what, op, floor), values in seen.items():
        numbers = [v for v, _, _ in values if v is not None]
        worst = (min(numbers) if op == ">=" else max(numbers)) if numbers else None
        margin = None if worst is None else round(worst - floor if op == ">=" else floor - worst, 4)
        where = [f"{c}/seed {s}" for v, c, s in values if v == worst]
        emit({"bench": "smoke_floors", "kind": "floor", "example": script, "check": what, "op": op, "floor": floor,
              "worst": worst, "margin": margin, "worst_at": where, "runs": len(values), "machine": machine(),
              "versions": info})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
