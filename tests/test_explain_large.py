"""A large photo is explained at what it costs to predict it: the model sees the preprocessed input, and
the figures draw the image and its heatmap at their display size, never at the photo's full size (an
8000x8000 photo took 40 s and 6.8 GB to explain, 7.5 s to predict). Measured here on 3000x3000 images:
what numpy and Python allocate while explaining (tracemalloc) stays below one float copy of the photo
(decoding the JPEG alone, as predict does, peaks at about half of that; the figures' own drawing adds less
than that), and the heatmap made at the display size lines up with the image as the full-size one does."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import written_run
from vislab.data.preprocess import Preprocessing
from vislab.explain import explain
from vislab.models import create_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIDE = 3000
BOUND = SIDE * SIDE * 3 * 4  # bytes: one float32 copy of the RGB photo, 108 MB (its float32 heatmap is 36 MB)


def smooth_photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 (H, W, 3): random colours blown up, a photo's smooth regions rather than pixel noise."""
    small = np.random.default_rng(seed).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    return np.array(Image.fromarray(small).resize((width, height), Image.BILINEAR))


@pytest.fixture(scope="module")
def large_photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "large.jpg"
    Image.fromarray(smooth_photo(SIDE, SIDE)).save(path, quality=85)
    return path


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    run, _ = written_run(tmp_path_factory.mktemp("cnn"), "seed_cnn2")
    return run


def traced_peak(call) -> tuple[object, int]:
    """``call()``'s result and the peak of what Python and numpy allocated while it ran (the libraries the
    figures and LIME use imported first: their imports are no part of the measure, and are slow traced)."""
    import lime.lime_image  # noqa: F401
    import skimage.segmentation  # noqa: F401

    import vislab.viz.explain  # noqa: F401

    tracemalloc.start()
    try:
        result = call()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("method, options", [("gradcam", {}), ("lime", {"num_samples": 20, "segmentation": "slic"})])
def test_explaining_a_large_photo_allocates_for_its_display_size_not_its_full_size(cnn_run, large_photo, tmp_path,
                                                                                   method, options):
    from vislab import api

    results, peak = traced_peak(lambda: api.explain(cnn_run, [str(large_photo)], method=method, out=tmp_path,
                                                    device="cpu", **options))
    assert "error" not in results[0], results
    assert peak < BOUND, f"explaining a {SIDE}x{SIDE} photo allocated {peak / 1e6:.0f} MB"
    with Image.open(results[0]["png"]) as png:
        assert png.width > 300  # the overlay was drawn


def test_the_report_panel_of_large_images_allocates_for_their_display_size(cnn_run, large_photo, tmp_path):
    from vislab.data.images import read_image
    from vislab.explain import explain_samples
    from vislab.runs import load

    loaded = load(str(cnn_run))
    image = read_image(large_photo)
    panel, peak = traced_peak(lambda: explain_samples(loaded, [image], tmp_path, titles=["large"]))
    assert panel.is_file() and peak < BOUND, f"the panel of a {SIDE}x{SIDE} image allocated {peak / 1e6:.0f} MB"


def test_a_heatmap_made_at_the_display_size_lines_up_with_the_image_as_the_full_size_one():
    """A centre-cropping model (crop_pct 0.875) on a wide photo: the model never sees its left and right
    edges, so the map is 0 there; at the display size the map is the full-size map shrunk, its edges where
    the full-size map's fall, and the prediction is the same (the model saw the same input)."""
    torch.manual_seed(0)
    model = create_model("seed_cnn2", num_classes=3, in_chans=3, input_size=(32, 32)).eval()
    pre = Preprocessing(input_size=(3, 32, 32), crop_pct=0.875)
    height, width = 1200, 2000
    image = torch.from_numpy(smooth_photo(height, width, seed=1)).permute(2, 0, 1).contiguous()
    size = (307, 512)  # its display size: at most 512 px a side, aspect kept
    for method in ("gradcam", "occlusion"):
        full = explain(model, pre, image, method=method)
        shown = explain(model, pre, image, method=method, size=size)
        assert full.heatmap.shape == (height, width) and shown.heatmap.shape == size
        assert (shown.target, shown.score) == (full.target, full.score)
        shrunk = np.asarray(Image.fromarray(full.heatmap).resize(size[::-1], Image.BILINEAR))
        assert np.abs(shown.heatmap - shrunk).mean() < 0.02, method
        seen_full = np.flatnonzero(full.heatmap.max(axis=0) > 0)
        seen_shown = np.flatnonzero(shown.heatmap.max(axis=0) > 0)
        scale = size[1] / width
        assert abs(seen_shown[0] - seen_full[0] * scale) <= 2 and abs(seen_shown[-1] - seen_full[-1] * scale) <= 2
        assert seen_full[0] > 0.1 * width  # the crop did leave the edges out


def test_overlay_figures_draw_a_large_image_and_its_full_size_heatmap_at_the_display_size():
    """What the figures are given by other callers (the server's explanation: the image and the heatmap at its
    size) is shrunk before it is drawn, the heatmap to exactly the image's drawn size."""
    from vislab.viz.explain import lime_figure, overlay_figure

    image = smooth_photo(SIDE, SIDE // 2).transpose(2, 0, 1).copy()  # uint8 (C, H, W), as read_image gives
    heat = np.zeros((SIDE, SIDE // 2), np.float32)
    heat[: SIDE // 2] = 1.0  # the top half
    mask = np.zeros((SIDE, SIDE // 2), np.int8)
    mask[: SIDE // 2] = 1
    expected = (512, 256)  # its display size: at most 512 px a side, aspect kept
    fig = overlay_figure(image, heat, "large")
    drawn = [np.asarray(shown.get_array()) for ax in fig.axes for shown in ax.images]
    assert len(drawn) == 3 and all(array.shape[:2] == expected for array in drawn)
    heat_drawn = drawn[2]  # the top half hot, the bottom half cold, as over the full-size image
    assert heat_drawn[: expected[0] // 2 - 1].min() == 1.0 and heat_drawn[expected[0] // 2 + 1:].max() == 0.0
    fig = lime_figure(image, mask, heat, "lime")
    assert all(np.asarray(shown.get_array()).shape[:2] == expected for ax in fig.axes for shown in ax.images)


def test_the_server_explains_a_large_photo_at_its_display_size(cnn_run, large_photo):
    """``/v1/explain`` draws what `vislab explain` draws: the map made at the display size, not the photo's."""
    from fastapi.testclient import TestClient

    from vislab.serve.app import ServeConfig, create_app

    body = large_photo.read_bytes()
    with TestClient(create_app(str(cnn_run), ServeConfig()),
                    raise_server_exceptions=False) as client:
        for _ in range(600):
            if client.get("/health").status_code == 200:
                break
            __import__("time").sleep(0.05)
        answer, peak = traced_peak(lambda: client.post("/v1/explain", content=body,
                                                         headers={"content-type": "image/jpeg"}))
    assert answer.status_code == 200, answer.text
    assert peak < BOUND, f"explaining a {SIDE}x{SIDE} photo in the server allocated {peak / 1e6:.0f} MB"
    with Image.open(__import__("io").BytesIO(answer.content)) as png:
        assert png.width > 300
