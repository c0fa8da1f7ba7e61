"""A short run's fixed cost: what it imports, checked in a fresh interpreter (load-independent).

``torch._dynamo`` costs 2-3 s of CPU to import on a 2-core machine, and torch's optimizers import
it on construction and on their first step; vislab's optimizers skip those ``torch.compile``
guards while nothing can be compiling (vislab.train.optim.NoDynamoImport).
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from vislab.train.optim import Adam, AdamW, FusedRMSprop, KerasRMSprop, SGD, build_optimizer


def _fresh(code: str) -> dict:
    """Run ``code`` in a new interpreter; it prints one JSON line last."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_building_and_stepping_optimizers_does_not_import_dynamo():
    out = _fresh("""
import json, sys, torch
from vislab.train.optim import build_optimizer
seen = {}
for name in ("adam", "adamw", "sgd", "rmsprop", "lbfgs"):
    model = torch.nn.Linear(4, 2)
    opt = build_optimizer(model.parameters(), name, 0.01, weight_decay=0.01)
    def closure():
        opt.zero_grad()
        loss = model(torch.ones(3, 4)).pow(2).sum()
        loss.backward()
        return loss
    for _ in range(2):
        opt.step(closure)
    opt.load_state_dict(opt.state_dict())
    seen[name] = "torch._dynamo" in sys.modules
print(json.dumps(seen))
""")
    assert out == {name: False for name in ("adam", "adamw", "sgd", "rmsprop", "lbfgs")}


def _steps(cls, seed: int, steps: int = 6, **kwargs):
    generator = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(s, generator=generator)) for s in ((8, 5), (8,), (3, 8))]
    opt = cls([{"params": params[:2]}, {"params": params[2:], "lr": 3e-3}], lr=1e-2, **kwargs)
    for _ in range(steps):
        opt.zero_grad()
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator)
        opt.step()
    return params, opt


@pytest.mark.parametrize("ours, theirs, kwargs", [
    (Adam, torch.optim.Adam, {"weight_decay": 0.01}),
    (Adam, torch.optim.Adam, {"fused": True}),
    (AdamW, torch.optim.AdamW, {"weight_decay": 0.05, "fused": True}),
    (SGD, torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
    (FusedRMSprop, torch.optim.RMSprop, {"alpha": 0.9}),
])
def test_optimizers_step_as_torchs(ours, theirs, kwargs):
    a, opt_a = _steps(ours, 0, **kwargs)
    b, opt_b = _steps(theirs, 0, **kwargs)
    for x, y in zip(a, b):
        torch.testing.assert_close(x.detach(), y.detach(), rtol=1e-6, atol=1e-7)
    # the state dict loads across: the same keys and tensors as torch's
    opt_b.load_state_dict(opt_a.state_dict())
    assert opt_b.state_dict()["param_groups"] == opt_a.state_dict()["param_groups"]


def test_step_keeps_grad_mode_and_hooks():
    calls = []
    model = torch.nn.Linear(3, 1)
    opt = build_optimizer(model.parameters(), "adam", 0.1)
    torch.optim.Adam([torch.nn.Parameter(torch.ones(1))])  # torch wraps Adam.step in its hook runner
    opt.register_step_post_hook(lambda optimizer, args, kwargs: calls.append("post"))
    model(torch.ones(2, 3)).sum().backward()
    before = model.weight.detach().clone()
    opt.step()  # in-place updates of leaves that require grad: this raises unless autograd is off
    assert calls == ["post"]  # once: torch.optim.Adam's own hook runner is not run a second time
    assert torch.is_grad_enabled()  # restored after the step
    assert not torch.equal(before, model.weight.detach())
    assert isinstance(KerasRMSprop([torch.nn.Parameter(torch.ones(1))]), torch.optim.RMSprop)


@pytest.mark.parametrize("model, flags", [("mlp", ["--no-figures", "--no-evaluate"]), ("chollet_convnet", []),
                                         ("mlp", [])])
def test_short_train_run_imports_only_what_it_uses(tmp_path, model, flags):
    """A short digits run, evaluation, figures and Grad-CAM (or, for the mlp, occlusion) panels included: no
    compiler, no torchvision/OpenCV (pytorch-grad-cam's imports), no captum, no export or serving stack."""
    out = _fresh(f"""
import json, sys
from vislab.cli import main
code = main(["train", "--data", "digits", "--model", {model!r}, "--epochs", "1", "--no-progress",
             *{flags!r}, "--out", {str(tmp_path / "run")!r}])
heavy = ("torch._dynamo", "sympy", "torchvision", "cv2", "pytorch_grad_cam", "captum", "onnx", "onnxruntime", "fastapi",
         "timm")
print(json.dumps({{"code": code, "imported": [m for m in heavy if m in sys.modules]}}))
""")
    assert out == {"code": 0, "imported": []}
    if not flags:
        method = "occlusion" if model == "mlp" else "gradcam"
        assert (tmp_path / "run" / "plots" / "explain" / f"{method}_samples.png").stat().st_size > 1000


@pytest.mark.parametrize("name, size", [("seed_cnn2", (3, 32, 32)), ("chollet_convnet", (1, 28, 28)),
                                        ("fastnet", (1, 28, 28))])
def test_grad_cam_is_pytorch_grad_cams(name, size):
    """vislab computes Grad-CAM itself (importing pytorch-grad-cam costs seconds): the same maps."""
    from pytorch_grad_cam import GradCAM

    from vislab.explain.attribution import grad_cam
    from vislab.explain.base import ClassScore, no_inplace, normalise_heatmap
    from vislab.explain.targets import find_target_layer
    from vislab.models import create_model

    torch.manual_seed(0)
    model = create_model(name, num_classes=3, in_chans=size[0], input_size=size[1:]).eval()
    layer = find_target_layer(model, size)
    for seed in range(3):
        inputs = torch.rand(1, *size, generator=torch.Generator().manual_seed(seed))
        for target in range(3):
            ours = grad_cam(model, inputs, ClassScore(target), layer)
            with no_inplace(model), GradCAM(model=model, target_layers=[layer.module],
                                            reshape_transform=layer.to_map) as cam:
                theirs = normalise_heatmap(cam(input_tensor=inputs, targets=[ClassScore(target)])[0])
            assert ours.shape == theirs.shape == size[1:]
            np.testing.assert_allclose(ours, theirs, atol=2e-3)


def test_explaining_a_convnet_does_not_import_torchvision():
    out = _fresh("""
import json, sys, torch
from vislab.explain.attribution import grad_cam
from vislab.explain.base import ClassScore
from vislab.explain.targets import find_target_layer
from vislab.models import create_model
model = create_model("chollet_convnet", num_classes=3, in_chans=1).eval()
heat = grad_cam(model, torch.rand(1, 1, 28, 28), ClassScore(1), find_target_layer(model, (1, 28, 28)))
print(json.dumps({"shape": list(heat.shape), "imported": [m for m in ("torchvision", "torch._dynamo", "cv2",
                  "pytorch_grad_cam") if m in sys.modules]}))
""")
    assert out == {"shape": [28, 28], "imported": []}


def test_a_segmentation_explanation_target_does_not_import_pytorch_grad_cam():
    # the end-of-run panels of a segmentation run and `vislab explain` on one: the region score is vislab's
    out = _fresh("""
import json, sys, torch
from vislab.tasks import get_task
index, share, score = get_task("segmentation").explain_target(torch.rand(1, 3, 8, 8), "top", ["a", "b", "c"])
print(json.dumps({"scored": float(score(torch.rand(3, 8, 8))) >= 0, "imported": [m for m in ("cv2",
                  "pytorch_grad_cam") if m in sys.modules]}))
""")
    assert out == {"scored": True, "imported": []}


def test_figure_writer_skips_the_second_layout_pass_and_writes_the_same_bytes(tmp_path):
    """``_save`` drops tight_layout's placeholder engine (else savefig lays the figure out twice):
    the file is byte for byte what tight_layout + savefig writes, and a constrained layout, which
    needs that pass, is kept."""
    import matplotlib.pyplot as plt
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    from vislab.viz import PNG_COMPRESS_LEVEL
    from vislab.viz.evaluation import DPI, _save

    png = {"compress_level": PNG_COMPRESS_LEVEL}  # as _save encodes

    def figure(layout=None):
        fig, ax = plt.subplots(figsize=(4, 3), layout=layout)
        ax.plot([0, 1, 2], [2, 0, 1], "o-", label="a curve")
        ax.set_xlabel("a long x label that needs a margin")
        ax.set_title("title")
        ax.legend()
        return fig

    fig = figure()
    fig.tight_layout()
    fig.savefig(tmp_path / "reference.png", dpi=DPI, pil_kwargs=png)
    plt.close(fig)
    _save(figure(), tmp_path / "saved.png")
    assert (tmp_path / "saved.png").read_bytes() == (tmp_path / "reference.png").read_bytes()

    fig = figure("constrained")
    fig.savefig(tmp_path / "constrained_reference.png", dpi=DPI, pil_kwargs=png)
    plt.close(fig)
    fig = figure("constrained")
    assert isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine)
    _save(fig, tmp_path / "constrained.png", tight=False)
    assert (tmp_path / "constrained.png").read_bytes() == (tmp_path / "constrained_reference.png").read_bytes()


def test_figure_writer_draws_the_figure_once(tmp_path, monkeypatch):
    """One draw per saved figure: the pass tight_layout's placeholder engine would add is gone."""
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    from vislab.viz.evaluation import _save

    draws = []
    original = Figure.draw
    monkeypatch.setattr(Figure, "draw", lambda self, renderer: (draws.append(1), original(self, renderer))[1])
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    _save(fig, tmp_path / "once.png")
    assert len(draws) == 1


def test_confusion_matrix_is_drawn_as_sklearn_draws_it_without_importing_sklearn(tmp_path):
    """The run's parent draws queued figures once it waits: drawing a confusion matrix must not cost it
    scikit-learn's import (and pandas'). The picture is ConfusionMatrixDisplay's, byte for byte."""
    out = _fresh(f"""
import json, sys
from vislab.viz.evaluation import plot_confusion_matrix
plot_confusion_matrix([[5, 1, 0], [2, 7, 1], [0, 3, 9]], ["cat", "dog", "bird"], {str(tmp_path / "ours.png")!r})
print(json.dumps({{"sklearn": "sklearn" in sys.modules, "pandas": "pandas" in sys.modules}}))
""")
    assert out == {"sklearn": False, "pandas": False}
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    from vislab.viz.evaluation import _save

    fig, ax = plt.subplots(figsize=(4 + 0.45 * 3 + 1.5, 4 + 0.45 * 3))
    ConfusionMatrixDisplay(np.array([[5, 1, 0], [2, 7, 1], [0, 3, 9]], dtype=float),
                           display_labels=["cat", "dog", "bird"]).plot(ax=ax, cmap="Blues", values_format=".0f",
                                                                        xticks_rotation=45, colorbar=True)
    ax.set_title("Confusion matrix (counts)")
    _save(fig, tmp_path / "sklearn.png")
    assert (tmp_path / "ours.png").read_bytes() == (tmp_path / "sklearn.png").read_bytes()


def test_image_grids_are_queued_before_the_line_plots(tmp_path, monkeypatch):
    """A helper takes the queue's front and the waiting parent its back: the grids, whose large pixel
    buffers page-fault in the parent, go first; the written list keeps its order."""
    import vislab.tasks.classification_figures as figures
    from vislab.tasks.classification_metrics import classification_metrics

    queued = []
    monkeypatch.setattr(figures, "draw", lambda fn, *args, **kwargs: (queued.append(fn.split(":")[1]), args[-1])[1])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
    labels = np.array([0, 1, 1, 0])
    preds = type("P", (), {"labels": labels, "probs": probs, "sources": [f"test#{i}" for i in range(4)]})
    written = figures.write_evaluation_figures(preds, ["cat", "dog"], classification_metrics(labels, probs, ["cat", "dog"]),
                                               lambda idx: np.zeros((len(idx), 1, 8, 8), np.uint8), tmp_path)
    grids = [i for i, name in enumerate(queued) if name == "plot_prediction_grid"]
    assert grids == [0, 1, 2] and len(queued) > 3
    assert [p.name for p in written][:2] == ["confusion_matrix.png", "confusion_matrix_normalized.png"]
    assert written[-1].name == "misclassified.csv"


def test_samples_montage_is_sized_to_its_images(tmp_path):
    """Small images get small cells: matplotlib scales the canvas to the figure's pixels in float RGBA
    buffers, so 28 px images in 1.5-inch cells cost a second. Large ones keep 1.5 inches."""
    from PIL import Image

    from vislab.viz.data import plot_samples_per_class

    def size(side):
        samples = [[np.zeros((1, side, side), np.uint8)] * 8 for _ in range(10)]
        path = plot_samples_per_class(samples, [f"class {i}" for i in range(10)], tmp_path / f"s{side}.png")
        return Image.open(path).size

    small, large = size(28), size(128)
    assert small[0] * small[1] <= 800 * 900
    assert large == (1320, 1550)


@pytest.mark.parametrize("name, size, window, stride", [("mlp", (1, 28, 28), None, None), ("seed_cnn2", (3, 32, 30), 4, 2),
                                                        ("seed_cnn2", (3, 33, 31), 4, 3), ("mlp", (1, 28, 28), 5, 5),
                                                        ("mlp", (1, 28, 28), 28, 1)])
def test_occlusion_is_captums(name, size, window, stride):
    """vislab computes occlusion itself (importing captum imports pyplot): captum's maps, the last square
    reaching past the edge included."""
    from captum.attr import Occlusion

    from vislab.explain.attribution import _score_function, occlusion, occlusion_window
    from vislab.explain.base import ClassScore, normalise_heatmap
    from vislab.models import create_model

    torch.manual_seed(0)
    model = create_model(name, num_classes=3, in_chans=size[0], input_size=size[1:]).eval()
    side = window or occlusion_window(min(size[1:]))
    for seed in range(2):
        inputs = torch.randn(1, *size, generator=torch.Generator().manual_seed(seed))
        for target in range(3):
            ours = occlusion(model, inputs, ClassScore(target), window=window, stride=stride)
            theirs = Occlusion(_score_function(model, ClassScore(target))).attribute(
                inputs, sliding_window_shapes=(size[0], side, side),
                strides=(size[0], stride or side // 2, stride or side // 2), baselines=0.0, perturbations_per_eval=7)
            theirs = normalise_heatmap(theirs[0].sum(0))
            assert ours.shape == theirs.shape == size[1:]
            np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_occlusion_refuses_a_window_that_leaves_pixels_uncovered():
    from vislab.explain.attribution import occlusion
    from vislab.explain.base import ClassScore
    from vislab.models import create_model

    model = create_model("mlp", num_classes=2, in_chans=1, input_size=(8, 8)).eval()
    for window, stride in ((9, 1), (2, 3)):
        with pytest.raises(ValueError, match="stride is at most the window"):
            occlusion(model, torch.zeros(1, 1, 8, 8), ClassScore(0), window=window, stride=stride)
