"""Every file vislab reads, in every command that reads it, damaged every way a user's file gets damaged.

Each case calls ``vislab.cli.main`` in-process (what `vislab ...` runs) with one file replaced by:
zero bytes, the first half of the real file, random bytes, a file of another format, a folder,
or nothing. Each must end in exit 1 and one line on stderr, with no traceback, and must leave
the run folder exactly as it was. A last test scans the package with ``ast`` for a decoder
called outside the shared guard (``vislab.core.files``).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
import pytest
from PIL import Image

from conftest import HAVE_FMNIST, digits_arrays, write_image, write_segmentation_set
from vislab import api
from vislab.cli import main

FMNIST = Path("/usr/share/datasets/fashion-mnist")
DAMAGES = ("zero", "truncated", "random", "wrong-format", "folder", "missing")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One trained run, its ONNX export, a class-folder data set, a labels CSV and a segmentation set."""
    root = tmp_path_factory.mktemp("bad")
    images, labels = digits_arrays(per_class=6)
    folder = root / "digits"
    rows = ["file,label"]
    for i, (image, label) in enumerate(zip(images, labels)):
        write_image(folder / str(label) / f"d{i}.png", image)
        rows.append(f"{label}/d{i}.png,{label}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    (root / "test.csv").write_text("file,label\n" + "\n".join(f"digits/{r}" for r in rows[1:]) + "\n")
    (root / "ids.csv").write_text("".join(f"{c},{c}\n" for c in range(10)))
    run = root / "run"
    api.train(data="digits", model="chollet_convnet", epochs=1, seed=0, max_per_class=20, out=str(run))
    assert main(["export", str(run), "--out", str(root / "model.onnx"), "--images", str(folder / "0"),
                 "--tolerance", "1"]) == 0
    write_segmentation_set(root / "seg")
    (root / "palette.csv").write_text("name,r,g,b\nbackground,0,0,0\nshirt,255,0,0\nshoe,0,255,0\n")
    (root / "classes.txt").write_text("background\nshirt\nshoe\n")
    (root / "weights.json").write_text(json.dumps({str(c): 1.0 for c in range(10)}))
    (root / "config.yaml").write_text("train:\n  epochs: 1\n")
    torch_file = root / "weights.pth"
    import torch

    torch.save({"weight": torch.zeros(3)}, torch_file)
    return root


def _damage(path: Path, how: str, good: bytes) -> None:
    """Replace ``path`` by a damaged version of ``good`` (the real file's bytes)."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    if how == "zero":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(good[: max(1, len(good) // 2)])
    elif how == "random":
        path.write_bytes(np.random.default_rng(len(good)).integers(0, 256, 512, dtype=np.uint8).tobytes())
    elif how == "wrong-format":
        # an image for the text and weights files, a JSON document for the images and the binary files
        text_like = path.suffix in (".png", ".jpg", ".gz", ".safetensors", ".pt", ".pth", ".onnx")
        if text_like:
            path.write_bytes(json.dumps({"not": "this format"}).encode())
        else:
            buffer = Path(str(path) + ".tmp.png")
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(buffer)
            path.write_bytes(buffer.read_bytes())
            buffer.unlink()
    elif how == "folder":
        path.mkdir()
        (path / "inside.txt").write_text("a folder where a file should be")


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# (case id, the file to damage relative to the work folder, argv with {w} = the work folder)
CASES = [
    ("model.json/predict", "run/model.json", ["predict", "{w}/run", "{w}/digits/0/d0.png"]),
    ("model.json/evaluate", "run/model.json", ["evaluate", "{w}/run", "--no-figures"]),
    ("model.safetensors/predict", "run/model.safetensors", ["predict", "{w}/run", "{w}/digits/0/d0.png"]),
    ("model.safetensors/evaluate", "run/model.safetensors", ["evaluate", "{w}/run", "--no-figures"]),
    ("config.yaml/evaluate", "run/config.yaml", ["evaluate", "{w}/run", "--no-figures"]),
    ("config.yaml/resume", "run/config.yaml", ["train", "--resume", "{w}/run", "--epochs", "2"]),
    ("last.pt/resume", "run/checkpoints/last.pt", ["train", "--resume", "{w}/run", "--epochs", "2"]),
    ("--weights/predict", "run/checkpoints/best.safetensors",
     ["predict", "{w}/run", "{w}/digits/0/d0.png", "--weights", "{w}/run/checkpoints/best.safetensors"]),
    ("--weights .pth/summary", "weights.pth", ["summary", "resnet18", "--weights", "{w}/weights.pth"]),
    ("onnx/predict", "model.onnx", ["predict", "{w}/model.onnx", "{w}/digits/0/d0.png"]),
    ("labels.csv/train", "digits/labels.csv",
     ["train", "--data", "{w}/digits/labels.csv", "--model", "mlp", "--epochs", "1", "--out", "{w}/out"]),
    ("--test-csv/train", "test.csv", ["train", "--data", "{w}/digits", "--test-csv", "{w}/test.csv", "--model", "mlp",
                                      "--epochs", "1", "--out", "{w}/out"]),
    ("--class-ids/train", "ids.csv", ["train", "--data", "{w}/digits", "--test-csv", "{w}/test.csv", "--class-ids",
                                      "{w}/ids.csv", "--model", "mlp", "--epochs", "1", "--out", "{w}/out"]),
    ("--config/train", "config.yaml", ["train", "--config", "{w}/config.yaml", "--data", "{w}/digits",
                                       "--model", "mlp", "--out", "{w}/out"]),
    ("--class-weights/train", "weights.json", ["train", "--data", "{w}/digits", "--class-weights",
                                               "{w}/weights.json", "--model", "mlp", "--epochs", "1",
                                               "--out", "{w}/out"]),
    ("--palette/train", "palette.csv", ["train", "--task", "segmentation", "--data", "{w}/seg", "--palette",
                                        "{w}/palette.csv", "--model", "unet", "--epochs", "1", "--out", "{w}/out"]),
    ("--classes/train", "classes.txt", ["train", "--task", "segmentation", "--data", "{w}/seg", "--classes",
                                        "{w}/classes.txt", "--model", "unet", "--epochs", "1", "--out", "{w}/out"]),
]
if HAVE_FMNIST:
    CASES.append(("idx/train", "fmnist/train-images-idx3-ubyte.gz",
                  ["train", "--data", "fashion-mnist", "--data-dir", "{w}/fmnist", "--model", "mlp", "--epochs", "1",
                   "--out", "{w}/out"]))

# An empty YAML config is a valid config (all defaults).
ALLOWED = {("--config/train", "zero")}
# A text file cut at half may still be a valid, shorter file: then the command may succeed, or the
# data check that follows refuses it (one line, naming what it found).
TEXT = (".csv", ".txt", ".yaml", ".json")


@pytest.fixture
def work(world, tmp_path):
    """A fresh copy of the world per case (the IDX files linked in when present)."""
    work = tmp_path / "w"
    shutil.copytree(world, work, symlinks=False)
    if HAVE_FMNIST:
        (work / "fmnist").mkdir()
        for file in FMNIST.glob("*.gz"):
            shutil.copy(file, work / "fmnist" / file.name)
    return work


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("case, target, argv", CASES, ids=[c[0] for c in CASES])
def test_a_damaged_file_ends_in_one_line(case, target, argv, how, work, capsys):
    if (case, how) in ALLOWED:
        pytest.skip("a valid input in this form")
    path = work / target
    good = path.read_bytes()
    _damage(path, how, good)
    before = _hashes(work / "run")
    capsys.readouterr()
    code = main([a.replace("{w}", str(work)) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert _hashes(work / "run") == before
    if how == "truncated" and path.suffix in TEXT and code == 0:
        return
    assert code == 1, (code, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("vislab ") and "error:" in lines[0], lines[0]
    if not (how == "truncated" and path.suffix in TEXT):
        assert path.name in lines[0] or str(work / "run") in lines[0], lines[0]
    assert not (work / "out" / "model.json").exists()


def test_a_run_config_cut_at_any_line_is_refused_by_name(world, tmp_path):
    """Where half a config.yaml ends depends on its values (the precision this CPU chose, the paths), so
    every cut is tried: a shorter file that still parses must not pass for the run's settings."""
    from vislab.core.config import Config
    from vislab.core.errors import UserError
    from vislab.runs import LAST_CONFIG_KEY, read_config

    assert list(Config().to_dict())[-1] == LAST_CONFIG_KEY  # the key that shows a file was written whole
    lines = (world / "run" / "config.yaml").read_text().splitlines(keepends=True)
    run = tmp_path / "run"
    run.mkdir()
    for end in range(1, len(lines)):
        (run / "config.yaml").write_text("".join(lines[:end]))
        with pytest.raises(UserError, match="config.yaml") as caught:
            read_config(run)
        assert "restore the config.yaml" in str(caught.value), caught.value
    (run / "config.yaml").write_text("".join(lines))
    assert read_config(run).out == str(world / "run")


@pytest.mark.parametrize("target", ["metrics.json", "history.csv", "model.json"])
def test_compare_names_a_damaged_file_and_ranks_the_other_runs(target, work, capsys):
    """One run's damaged file leaves its columns blank with the file named, never "not evaluated"."""
    shutil.copytree(work / "run", work / "other")
    _damage(work / "other" / target, "random", b"")
    code = main(["compare", str(work / "run"), str(work / "other"), "--out", str(work / "cmp")])
    out, err = capsys.readouterr()
    text = "".join((out + err).split())  # rich wraps long lines, paths included
    assert code == 0 and "Traceback" not in text, text
    assert f"{work / 'other' / target}:cannotberead" in text, text
    assert "notevaluated" not in text
    if target == "metrics.json":  # alone, nothing to rank: the error names the file and the fix
        assert main(["compare", str(work / "other"), "--out", str(work / "cmp")]) == 1
        err = capsys.readouterr().err
        assert f"{work / 'other' / target}" in err and "vislab evaluate" in err and "no metrics.json" not in err


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_image_is_reported_and_the_others_predicted(how, work, capsys):
    """predict answers every image it can; a damaged one gets its reason, never a traceback."""
    path = work / "digits" / "0" / "d0.png"
    _damage(path, how, path.read_bytes())
    good = work / "digits" / "0" / "d1.png"
    code = main(["predict", str(work / "run"), str(path), str(good), "--format", "json"])
    out, err = capsys.readouterr()
    assert code == 0 and "Traceback" not in err, (out, err)
    by_file = {row["file"]: row for row in json.loads(out)}
    assert "error" in by_file[str(path)] and "error" not in by_file[str(good)]


# --------------------------------------------------------------------------- the guard is the only reader
GUARD = "core/files.py"
DECODERS = {("yaml", "safe_load"), ("yaml", "load"), ("json", "load"), ("json", "loads"), ("Image", "open"),
            ("gzip", "open"), ("torch", "load"), ("onnx", "load"), ("onnx", "load_model"), ("csv", "reader"),
            ("csv", "DictReader"), ("np", "fromfile"), ("np", "load"), ("ort", "InferenceSession"),
            ("onnxruntime", "InferenceSession")}
BARE = {"load_file", "safe_open", "InferenceSession"}
READS = {"read_text", "read_bytes"}
# Reads of files no user gives: the kernel's CPU description, and the fsync of a file just written.
EXEMPT: set[tuple[str, str]] = set()


def _call_name(node: ast.Call):
    func = node.func
    if isinstance(func, ast.Attribute):
        return (func.value.id if isinstance(func.value, ast.Name) else None), func.attr
    if isinstance(func, ast.Name):
        return None, func.id
    return None, None


def _opens_for_reading(node: ast.Call) -> bool:
    if _call_name(node) != (None, "open"):
        return False
    mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"), None)
    return mode is None or (isinstance(mode, ast.Constant) and "r" in str(mode.value))


def _reads_a_file(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) and (_call_name(n)[1] in READS | {"read"} or _opens_for_reading(n))
               for n in ast.walk(node))


def _is_decoder(node: ast.Call) -> bool:
    base, attr = _call_name(node)
    if (base, attr) in {("json", "loads"), ("yaml", "safe_load"), ("yaml", "load")}:
        return any(_reads_a_file(arg) for arg in node.args)  # parsing a flag's text is no file read
    if (base, attr) == ("Image", "open"):
        return not (node.args and isinstance(node.args[0], ast.Call) and _call_name(node.args[0])[1] == "BytesIO")
    if attr in READS and isinstance(node.func, ast.Attribute):
        owner = node.func.value  # Path("/proc/cpuinfo").read_text(): the kernel's, not a user's file
        return not (isinstance(owner, ast.Call) and owner.args and isinstance(owner.args[0], ast.Constant)
                    and str(owner.args[0].value).startswith("/proc/"))
    return (base, attr) in DECODERS or (base is None and attr in BARE) or _opens_for_reading(node)


def unguarded_reads(root: Path) -> list[str]:
    """``file:line call`` for every decoder called outside ``with reading(...)`` and outside the guard module."""
    found = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        if relative == GUARD:
            continue

        def visit(node, guarded: bool, function: str):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                function = node.name
            if isinstance(node, ast.With) and any(
                    isinstance(item.context_expr, ast.Call) and _call_name(item.context_expr)[1] == "reading"
                    for item in node.items):
                guarded = True
            if (isinstance(node, ast.Call) and not guarded and (relative, function) not in EXEMPT
                    and _is_decoder(node)):
                found.append(f"{relative}:{node.lineno} {ast.unparse(node.func)}")
            for child in ast.iter_child_nodes(node):
                visit(child, guarded, function)

        visit(ast.parse(path.read_text()), False, "")
    return found


def test_every_reader_goes_through_the_guard():
    import vislab

    found = unguarded_reads(Path(vislab.__file__).parent)
    assert not found, "decoded outside vislab.core.files.reading: " + ", ".join(found)


def test_the_scan_finds_a_reader_that_bypasses_the_guard(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "ok.py").write_text(
        "from vislab.core.files import reading\n"
        "def f(p):\n    with reading(p, 'x', 'y'):\n        return json.loads(p.read_text())\n")
    (package / "bad.py").write_text(
        "import json, yaml, torch\nfrom PIL import Image\nfrom safetensors.torch import load_file\n"
        "def a(p): return json.loads(p.read_text())\n"
        "def b(p): return yaml.safe_load(open(p))\n"
        "def c(p): return Image.open(p)\n"
        "def d(p): return load_file(str(p))\n"
        "def e(p): return torch.load(p, weights_only=True)\n"
        "def g(text): return yaml.safe_load(text)\n")  # a flag's text: not a file read
    found = unguarded_reads(package)
    assert [f.split(" ")[0] for f in found] == ["bad.py:4", "bad.py:4", "bad.py:5", "bad.py:5", "bad.py:6",
                                               "bad.py:7", "bad.py:8"], found


@pytest.mark.parametrize("text, where", [
    ("data:\n  val_split: [0.1\nmodel:\n  name: mlp\n", "line 3, column 6: expected ',' or ']'"),
    ("data:\n\tsource: digits\n", "line 2, column 1: found character '\\t'"),
    ("data:\n  source: digits\n   x: 1\n", "line 3, column 5: mapping values are not allowed here"),
])
def test_a_yaml_syntax_error_names_its_line_and_column(text, where, tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(config) in err and where in err, err
    assert ("spaces, not tabs" in err) == ("\t" in text)
    assert not (tmp_path / "run").exists()


def test_an_empty_config_is_said_and_runs_on_the_flags(tmp_path, capsys):
    config = tmp_path / "empty.yaml"
    config.write_text("# nothing yet\n")
    assert main(["train", "--config", str(config), "--data", "digits", "--model", "mlp", "--epochs", "1",
                 "--max-per-class", "10", "--no-figures", "--no-evaluate", "--no-progress",
                 "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert f"warning: --config {config} holds no settings" in err, err


def test_weights_of_another_model_name_the_tensors_that_do_not_fit(world, tmp_path, capsys):
    # PyTorch's own message starts with an empty header line ("Error(s) in loading state_dict for X:")
    from safetensors.torch import save_file

    state = {name: tensor.clone() for name, tensor in torch.nn.Linear(3, 2).state_dict().items()}
    other = tmp_path / "other.safetensors"
    save_file(state, str(other))
    assert main(["predict", str(world / "run"), str(world / "digits" / "0" / "d0.png"), "--weights", str(other)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"--weights {other} does not fit" in err, err
    assert "file tensors the model lacks (e.g. ['bias', 'weight'])" in err and "model tensors not in the file" in err
