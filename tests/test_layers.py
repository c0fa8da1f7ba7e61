"""The import graph flows one way: no module imports a higher layer, lazy imports included.

The order is the one docs/DESIGN.md writes on its ``Layer order:`` line; a package
that is not on it fails the test, so a new package has to take a place there.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "vislab"


def layer_order() -> list[str]:
    text = (ROOT / "docs" / "DESIGN.md").read_text()
    match = re.search(r"^Layer order:\s*(.+)$", text, re.M)
    assert match, "docs/DESIGN.md has no 'Layer order:' line"
    return [name.strip(" `.") for name in match.group(1).split("<")]


def layer_of(module: str) -> str:
    """vislab.train.loop -> train; vislab.runs -> runs; vislab (the package root) -> '' (exempt)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imports(path: Path) -> list[tuple[int, str]]:
    """Every vislab module a file imports, at any depth (inside functions too)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
    if path.name == "__init__.py":
        package = package.rsplit(".", 1)[0] + "." + "__init__"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("vislab")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")[: -node.level]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.startswith("vislab"):
                if name == "vislab":  # from vislab import x: x is a subpackage or module
                    found += [(node.lineno, f"vislab.{alias.name}") for alias in node.names]
                else:
                    found.append((node.lineno, name))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # a call handed to a helper interpreter by name (vislab.core.background): "vislab.viz.data:plot_x"
            match = CALL_BY_NAME.fullmatch(node.value)
            if match:
                found.append((node.lineno, match.group(1)))
    return found


CALL_BY_NAME = re.compile(r"(vislab(?:\.\w+)+):\w+")


def test_no_module_imports_a_higher_layer():
    order = layer_order()
    rank = {name: i for i, name in enumerate(order)}
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
        own = layer_of(module)
        if own in ("", "__init__", "__main__"):  # the package root re-exports lazily; __main__ runs the CLI
            continue
        if own not in rank:
            problems.append(f"{module}: layer {own!r} is not on docs/DESIGN.md's 'Layer order:' line")
            continue
        for line, target in imports(path):
            other = layer_of(target)
            if other in ("", "__version__"):
                continue
            if other not in rank:
                problems.append(f"{module}:{line} imports {target}, whose layer {other!r} is not in the order")
            elif rank[other] > rank[own]:
                problems.append(f"{module}:{line} imports {target}: {own} is below {other}")
    assert not problems, "\n".join(problems)


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    """The walker must see an import hidden in a function, or the test above could pass on a back-edge."""
    assert (2, "vislab.train.loop") in _probe_imports("def f():\n    from vislab.train.loop import train_run\n"
                                                     "    return train_run\n")
    order = layer_order()
    assert order.index("core") < order.index("tasks") < order.index("train") < order.index("cli")


# What the CLI may import: it parses, calls the API and prints; every piece of work is in vislab.api.
CLI_ALLOWED = ("vislab.api", "vislab.core")


def cli_imports_outside_the_api(path: Path) -> list[str]:
    return [f"{path.name}:{line} imports {target}" for line, target in imports(path)
            if not any(target == allowed or target.startswith(allowed + ".") for allowed in CLI_ALLOWED)]


def test_the_cli_imports_only_the_api_and_core():
    problems = cli_imports_outside_the_api(SRC / "cli.py")
    assert not problems, "cli.py must go through vislab.api:\n" + "\n".join(problems)


def test_the_cli_check_catches_a_lazy_import_of_another_layer():
    """The check above must fail on a function-level import of anything but the API and core."""
    probe = SRC / "_cli_probe_for_test.py"
    probe.write_text("from vislab import api\nfrom vislab.core.config import SPLITS\n"
                     "def f():\n    from vislab.runs import load\n    from vislab import __version__\n")
    try:
        assert cli_imports_outside_the_api(probe) == ["_cli_probe_for_test.py:4 imports vislab.runs",
                                                      "_cli_probe_for_test.py:5 imports vislab.__version__"]
    finally:
        probe.unlink()


def test_the_checker_sees_calls_handed_to_a_helper_by_name():
    """``draw("vislab.viz.data:plot_x", ...)`` imports vislab.viz.data where it runs: a layer edge too."""
    source = 'def f(draw):\n    return draw("vislab.train.loop:train_run")\n'
    assert (2, "vislab.train.loop") in _probe_imports(source)


def _probe_imports(source: str) -> list[tuple[int, str]]:
    """What the walker finds in a module of the package holding ``source`` (written, read, removed)."""
    probe = SRC / "core" / "_probe_by_name.py"
    probe.write_text(source)
    try:
        return imports(probe)
    finally:
        probe.unlink()
