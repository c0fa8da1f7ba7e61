"""Every example's --smoke runs, offline, and its printed numbers clear the floors it states.

Each script checks its own numbers (``check ...: ... ok`` lines, then ``all N checks passed``) and
exits 1 when one is missed, so an example that rots fails here. The README index must list every script.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import needs_fmnist

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TIMEOUT = 240  # seconds per script; all ten took 192 s together on the idle 2-core machine (examples/README.md)

# script -> lines (regular expressions) its smoke output must hold besides "all N checks passed"
EXPECTED = {
    "mnist_mlp_to_cnn.py": [r"^test_metrics$", r"^check mlp test accuracy: .* ok$", r"^check model_3 test accuracy"],
    "cifar10_dropout.py": [r"^over-fitting", r"^check reloaded test accuracy: .* ok$"],
    "cats_vs_dogs.py": [r"^the four accuracies", r"^activations of ", r"^filters of ", r"^Grad-CAM for "],
    "imagenet_pretrained.py": [r"^inception_v3.tv_in1k: input 299 px", r"^top-5 for .*coffee",
                               r"^check Lite0 top-k for the coffee: has espresso  ok$"],
    "gtsrb_finetune.py": [r"^test accuracy on \d+ Test.csv rows", r"confusion_matrix.png"],
    "dog_breeds_cnn_vs_transfer_vs_vit.py": [r"^dominant colour per breed", r"^CNN vs transfer vs ViT",
                                             r"^LIME for "],
    "camvid_segmentation.py": [r"^test mIoU ", r"^\$ vislab segment .* --palette camvid"],
    "multilabel_and_imbalance.py": [r"^per-label thresholds tuned on val", r"^long tail \(balanced test split\)"],
    "export_and_serve.py": [r"^check ONNX parity max \|diff\|: .* ok$", r"^check served answer == api.predict.* ok$"],
    "linear_regression.py": [r"^data: diabetes", r"^least squares: "],
}


def scripts() -> list[str]:
    return sorted(p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))


def test_every_example_has_expectations_here():
    assert sorted(EXPECTED) == scripts()


@needs_fmnist
@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_smoke_run(script, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, str(EXAMPLES / script), "--smoke", "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=TIMEOUT, env=env, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Traceback" not in output
    assert not re.search(r"\.py:\d+: \w*Warning: ", output), output[-3000:]  # one line each, as `vislab` prints
    assert re.search(r"^all \d+ checks passed$", result.stdout, re.M), result.stdout[-2000:]
    assert re.search(r"^smoke: ", result.stdout, re.M) or script == "linear_regression.py"  # substitutions said
    for pattern in EXPECTED[script]:
        assert re.search(pattern, result.stdout, re.M), f"{pattern!r} not in:\n{result.stdout[-3000:]}"


def test_a_wrong_data_path_is_one_message_not_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, str(EXAMPLES / "gtsrb_finetune.py"), "--data", str(tmp_path / "nope"),
                             "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and "nope" in result.stderr


def test_an_out_folder_the_example_did_not_write_is_refused(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    result = subprocess.run([sys.executable, str(EXAMPLES / "linear_regression.py"), "--smoke", "--out",
                             str(tmp_path)], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert result.returncode == 1 and "not empty" in result.stderr and (tmp_path / "mine.txt").exists()


def test_the_readme_indexes_every_example():
    readme = (EXAMPLES / "README.md").read_text()
    for script in scripts():
        assert re.search(rf"^\| \[`{re.escape(script)}`\]", readme, re.M), f"examples/README.md does not list {script}"
