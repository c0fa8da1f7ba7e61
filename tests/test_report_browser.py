"""report.html in a real browser: headless Chromium (Debian's ``chromium``) loads it offline.

Checks: no console errors (a control page with a script error proves the
detector sees them), the DOM holds the sections, and the screenshot is not blank
(with the dark page header drawn, so the inline CSS applied).
"""

import json
import shutil
import subprocess
import types

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image, ImageStat  # noqa: E402

from vislab.tasks.classification_figures import write_evaluation_figures  # noqa: E402
from vislab.tasks.base import write_metrics  # noqa: E402
from vislab.tasks.classification_metrics import classification_metrics  # noqa: E402
from vislab.report.html import build_report  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not found (install Debian's `chromium` package to run the browser test)"
)
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-logging=stderr", "--v=0",
]


def _chromium(page, tmp_path, *extra):
    profile = tmp_path / f"profile{len(list(tmp_path.glob('profile*')))}"
    result = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, page.resolve().as_uri()],
        capture_output=True, text=True, timeout=90,
    )
    return result


def console_errors(stderr: str) -> list[str]:
    """Page console messages Chromium logged (errors, uncaught exceptions, failed loads)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    (run / "config.yaml").write_text("model:\n  name: tiny\ntrain:\n  epochs: 1\n")
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 10)
    logits = rng.normal(size=(30, 3)) + 1.5 * np.eye(3)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    metrics = classification_metrics(labels, probs, ["a", "b", "c"])
    write_metrics(metrics, run)
    images = rng.integers(0, 256, size=(30, 3, 16, 16), dtype=np.uint8)
    predictions = types.SimpleNamespace(labels=labels, probs=probs, sources=[f"test#{i}" for i in range(30)])
    write_evaluation_figures(predictions, ["a", "b", "c"], metrics, lambda idx: images[idx], run)
    # the audit's label-issues section (`vislab audit --label-issues`) and its grid
    from vislab.viz.label_issues import plot_label_issues

    top = [{"file": f"train#{i}", "given": "a", "suggested": "b", "score": 0.01 * i, "split": "train"} for i in range(4)]
    plot_label_issues(list(images[:4]), ["a → b"] * 4, run / "plots" / "label_issues.png")
    (run / "audit.json").write_text(json.dumps({"dataset": "toy", "num_classes": 3, "warnings": [], "label_issues": {
        "model": "efficientnet_lite0 features + logistic regression, 5 folds", "method": "cleanlab", "folds": 5,
        "rank_by": "self_confidence", "filter_by": "prune_by_noise_rate", "images_checked": 30, "issues": 4,
        "issue_rate": 0.1333, "out_of_fold_accuracy": 0.9, "per_class": {"a": 4}, "csv": "label_issues.csv",
        "figure": "plots/label_issues.png", "top": top}}))
    return build_report(run)


def test_detector_sees_console_errors(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head>'
                   "<body><p>x</p><script>undefined_function();</script></body></html>")
    result = _chromium(bad, tmp_path, "--dump-dom")
    assert any("undefined_function" in line for line in console_errors(result.stderr)), result.stderr[-2000:]


def test_report_loads_without_console_errors(report, tmp_path):
    result = _chromium(report, tmp_path, "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    assert console_errors(result.stderr) == []
    dom = result.stdout
    for heading in ("Summary", "Metrics", "Evaluation figures", "Misclassified examples", "Label issues"):
        assert f"<h2>{heading}</h2>" in dom
    assert dom.count("<img ") >= 10
    assert "label_issues.png" in dom and "train#3" in dom  # the label-issues grid and its rows rendered


def test_report_screenshot_is_not_blank(report, tmp_path):
    shot = tmp_path / "shot.png"
    result = _chromium(report, tmp_path, f"--screenshot={shot}", "--window-size=1280,2000")
    assert shot.is_file(), result.stderr[-2000:]
    with Image.open(shot) as image:
        rgb = image.convert("RGB")
    assert rgb.size == (1280, 2000)
    assert max(ImageStat.Stat(rgb).stddev) > 20, "screenshot is (nearly) one colour"
    # the header band is the dark #24292f of the inline CSS
    header = ImageStat.Stat(rgb.crop((0, 0, 1280, 40))).mean
    assert max(header) < 80, f"page header not dark ({header}): CSS not applied?"
    body = rgb.crop((0, 100, 1280, 2000))
    assert len(body.getcolors(maxcolors=1 << 20) or range(1 << 20)) > 50
