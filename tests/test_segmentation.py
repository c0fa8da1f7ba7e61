"""Segmentation: metrics against hand computations, ignore-index handling, mask augmentation,
the image/mask source and its bad pairs, and `vislab segment`'s files on planted answers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vislab.core.config import AugmentConfig, DataConfig, SegmentationConfig
from vislab.data.augment import Augment, augment_with_masks
from vislab.data.palettes import get_palette
from vislab.data.masks import load_segmentation_dataset
from vislab.tasks.segmentation import Segmentation, SegmentationEvaluator, confusion_matrix, segmentation_metrics


# --------------------------------------------------------------------------- metrics
def test_miou_equals_hand_computation_and_skips_absent_classes():
    # rows true, columns predicted; class 3 is in neither truth nor prediction
    cm = np.array([[50, 2, 3, 0], [4, 30, 1, 0], [0, 5, 5, 0], [0, 0, 0, 0]])
    m = segmentation_metrics(cm, ["a", "b", "c", "d"])
    iou_a = 50 / (50 + 2 + 3 + 4)
    iou_b = 30 / (30 + 4 + 1 + 2 + 5)
    iou_c = 5 / (5 + 5 + 3 + 1)
    assert m["miou"] == pytest.approx((iou_a + iou_b + iou_c) / 3)
    assert m["per_class"][3]["iou"] is None and m["classes_in_mean"] == 3
    assert m["pixel_accuracy"] == pytest.approx(85 / 100)
    assert m["fw_iou"] == pytest.approx(0.55 * iou_a + 0.35 * iou_b + 0.10 * iou_c)
    assert m["mean_class_accuracy"] == pytest.approx((50 / 55 + 30 / 35 + 5 / 10) / 3)
    # a class predicted but never true counts in the mean with IoU 0
    m2 = segmentation_metrics(np.array([[3, 1], [0, 0]]), ["a", "b"])
    assert m2["miou"] == pytest.approx((3 / 4 + 0.0) / 2)


def test_ignore_index_never_counts():
    targets = torch.tensor([[[0, 1], [255, 1]]])
    logits = torch.randn(1, 3, 2, 2)
    cm = confusion_matrix(logits.argmax(1), targets, 3, 255)
    assert int(cm.sum()) == 3
    task = Segmentation(ignore_index=255)
    changed = logits.clone()
    changed[0, :, 1, 0] = torch.tensor([100.0, -100.0, 7.0])  # only the ignored pixel differs
    assert torch.equal(task.loss(logits, targets), task.loss(changed, targets))
    assert torch.equal(task.batch_stats(logits, targets)["confusion"], task.batch_stats(changed, targets)["confusion"])
    evaluator = SegmentationEvaluator(["a", "b", "c"], 255)
    evaluator.update(task.postprocess(changed), targets, ["x"])
    assert evaluator.matrix.sum() == 3


def test_the_summed_loss_is_the_plain_cross_entropy_whatever_trains():
    """Training's loss is --loss with its class weights; validation's and test's (summed) is the plain pixel
    cross-entropy per image, the loss `vislab evaluate` reports, so val_loss compares across runs."""
    torch.manual_seed(0)
    logits, targets = torch.randn(3, 4, 8, 8), torch.randint(0, 4, (3, 8, 8))
    plain = torch.nn.functional.cross_entropy(logits, targets)
    for name in ("ce", "dice", "ce+dice"):
        for weights in (None, [0.5, 1.0, 2.0, 4.0]):
            task = Segmentation(loss=name)
            task.class_weights = weights
            assert task.loss(logits, targets, "sum") == pytest.approx(3 * float(plain), rel=1e-5)
    assert float(Segmentation().loss(logits, targets)) == pytest.approx(float(plain), rel=1e-5)
    weighted = Segmentation(loss="ce+dice")
    weighted.class_weights = [0.5, 1.0, 2.0, 4.0]
    assert float(weighted.loss(logits, targets)) != pytest.approx(float(plain), rel=1e-3)  # training's own


# --------------------------------------------------------------------------- augmentation
def test_mask_augmentation_keeps_labels_and_geometry():
    masks = torch.zeros(4, 32, 32, dtype=torch.uint8)
    masks[:, 4:20, 6:26] = 3
    masks[:, 20:30, 2:12] = 7
    images = (masks.float() * 30 / 255).unsqueeze(1)  # the image is the mask, so the geometry can be compared
    for cfg in (AugmentConfig(hflip=True, vflip=True), AugmentConfig(rotation=40, zoom=0.3, width_shift=0.2, hflip=True)):
        generator = torch.Generator().manual_seed(3)
        out_images, out_masks = augment_with_masks(Augment(cfg), images, masks, generator, ignore_index=255)
        assert set(out_masks.unique().tolist()) <= {0, 3, 7, 255}  # nearest only: no label made up
        expected = (out_images[:, 0] * 255 / 30).round()
        # away from region edges (where the bilinear image blends two labels) image and mask must agree
        m = out_masks.float().unsqueeze(1)
        pool = torch.nn.functional.max_pool2d
        interior = ((pool(m, 3, 1, 1) == -pool(-m, 3, 1, 1))[:, 0] & (out_masks != 255))
        interior[:, [0, -1]] = False
        interior[:, :, [0, -1]] = False
        agree = (expected[interior] == out_masks[interior].float()).float().mean()
        assert interior.sum() > 1000 and agree > 0.995
        if cfg.geometric:
            assert (out_masks == 255).any()  # pixels from outside the mask are ignored, not background
    # the same draws as the images alone (classification's augmentation is unchanged)
    cfg = AugmentConfig(rotation=20, hflip=True)
    alone = Augment(cfg)(images, generator=torch.Generator().manual_seed(5))
    paired, _ = augment_with_masks(Augment(cfg), images, masks, torch.Generator().manual_seed(5))
    assert torch.equal(alone, paired)


# --------------------------------------------------------------------------- data source
def _pair(root: Path, stem: str, image: np.ndarray, mask: np.ndarray | None, mask_mode=None):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / "images" / f"{stem}.png")
    if mask is not None:
        Image.fromarray(mask, mode=mask_mode).save(root / "masks" / f"{stem}.png")


def test_source_reports_every_kind_of_bad_pair(tmp_path):
    rng = np.random.default_rng(0)
    good_mask = np.zeros((16, 16), np.uint8)
    good_mask[4:12, 4:12] = 2
    good_mask[0, 0] = 255  # the ignore index is allowed
    for i in range(6):
        _pair(tmp_path, f"good{i}", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), good_mask)
    _pair(tmp_path, "size", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), np.zeros((16, 12), np.uint8))
    bad_value = good_mask.copy()
    bad_value[1, 1] = 9
    _pair(tmp_path, "value", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), bad_value)
    _pair(tmp_path, "nomask", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), None)
    Image.fromarray(good_mask).save(tmp_path / "masks" / "noimage.png")
    (tmp_path / "images" / "broken.png").write_bytes(b"not a png")
    Image.fromarray(good_mask).save(tmp_path / "masks" / "broken.png")
    _pair(tmp_path, "rgb", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8),
          rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    (tmp_path / "classes.txt").write_text("background\nthing\nblob\n")
    ds = load_segmentation_dataset(DataConfig(source=str(tmp_path), val_split=0, test_split=2), SegmentationConfig())
    reasons = {Path(p).stem: r for p, r in ds.bad_files}
    assert "differs" not in reasons["size"] and "16x16" in reasons["size"]  # names both sizes
    assert "[9]" in reasons["value"] and "ignore index 255" in reasons["value"]
    assert reasons["nomask"].startswith("image without a mask")
    assert reasons["noimage"].startswith("mask without an image")
    assert "Pillow" in reasons["broken"] or "image" in reasons["broken"]
    assert "--palette" in reasons["rgb"]
    assert ds.class_names == ["background", "thing", "blob"]
    assert sum(len(s) for s in ds.splits.values()) == 6 and len(ds.splits["test"]) == 2
    assert ds.splits["train"].labels.shape[1:] == (16, 16)


def test_rgb_masks_through_the_camvid_palette(tmp_path):
    camvid = get_palette("camvid")
    assert len(camvid) == 32 and camvid.color_of("Sky") == (128, 128, 128) and camvid.color_of("Wall") == (64, 192, 0)
    ids = np.zeros((8, 8), np.int64)
    ids[:4] = camvid.names.index("Sky")
    ids[4:, :2] = camvid.names.index("Road")
    for i in range(3):
        _pair(tmp_path, f"p{i}", np.full((8, 8, 3), 40 * i, np.uint8), camvid.array()[ids])
    ds = load_segmentation_dataset(DataConfig(source=str(tmp_path), val_split=0, test_split=0),
                                   SegmentationConfig(palette="camvid"))
    assert ds.class_names[21] == "Sky"
    assert torch.equal(ds.splits["train"].labels[0].long(), torch.from_numpy(ids))


def test_class_names_from_the_masks_and_nearest_resizing(tmp_path):
    # one pair at another size: resized to the common size with nearest, so its labels stay {0, 5}
    for i in range(3):
        mask = np.zeros((12, 12), np.uint8)
        mask[3:9, 3:9] = 5
        _pair(tmp_path, f"a{i}", np.zeros((12, 12), np.uint8), mask)
    odd = np.zeros((7, 9), np.uint8)
    odd[2:5, 1:8] = 5
    _pair(tmp_path, "odd", np.zeros((7, 9), np.uint8), odd)
    ds = load_segmentation_dataset(DataConfig(source=str(tmp_path), val_split=0, test_split=0), SegmentationConfig())
    assert ds.class_names == [str(i) for i in range(6)]
    labels = ds.splits["train"].labels
    assert labels.shape == (4, 12, 12) and set(labels.unique().tolist()) == {0, 5}


# --------------------------------------------------------------------------- vislab segment
class _Fixed(torch.nn.Module):
    """A model that answers ``logits`` (1, K, h, w) for every image of a batch."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits.expand(len(x), -1, -1, -1)


def _segmenter(model, names, palette, input_size):
    """A loaded segmentation model behind the one inference path (a Predictor), in fp32."""
    from vislab.data.preprocess import Preprocessing
    from vislab.runs import Loaded
    from vislab.segment import load_segmenter
    from vislab.tasks import get_task

    loaded = Loaded(model.eval(), Preprocessing(input_size), list(names),
                    {"name": "planted", "task": "segmentation", "palette": palette.to_json()}, None,
                    task=get_task("segmentation"))
    return load_segmenter(loaded, device="cpu", precision="fp32")


class _Quarters(torch.nn.Module):
    """Class = which colour a pixel is, from the image's own colours (a planted answer), at half resolution."""

    def forward(self, x):  # x: 0..1 (mean 0, std 1)
        ids = torch.zeros(len(x), *x.shape[-2:], dtype=torch.long)
        ids[x[:, 0] > 0.5] = 1
        ids[x[:, 1] > 0.5] = 2
        ids[x[:, 2] > 0.5] = 3
        # half resolution, as a real network's: the segment command must upsample before the argmax
        one_hot = torch.nn.functional.one_hot(ids, 4).permute(0, 3, 1, 2).float() * 10
        return torch.nn.functional.interpolate(one_hot, scale_factor=0.5, mode="nearest")  # (N, K, h, w)


def _planted_segmenter(input_size=(3, 40, 60)):
    from vislab.data.palettes import Palette

    names = ["zero", "red", "green", "blue"]
    palette = Palette(tuple(names), ((0, 0, 0), (200, 0, 0), (0, 200, 0), (10, 20, 250)))
    return _segmenter(_Quarters(), names, palette, input_size)


def test_lime_on_a_segmentation_model_finds_the_region_of_the_class():
    """LIME scores each perturbed copy by the class's mean probability over the region the image's own
    prediction gives it, so the superpixels of that region weigh most."""
    from vislab.data.preprocess import Preprocessing
    from vislab.explain import explain
    from vislab.tasks import get_task

    image = np.zeros((40, 60, 3), np.uint8)
    image[:20, :30] = (255, 0, 0)
    image[:20, 30:] = (0, 255, 0)
    image[20:, :16] = (0, 0, 255)
    image[20:, 16:] = (90, 60, 30)
    names = ["zero", "red", "green", "blue"]
    result = explain(_Quarters().eval(), Preprocessing((3, 40, 60)), torch.from_numpy(image).permute(2, 0, 1),
                     method="lime", target="red", class_names=names, task=get_task("segmentation"),
                     num_samples=120, segmentation="slic")
    heat = result.heatmap
    assert result.target_name == "red" and heat.shape == (40, 60)
    red = np.zeros(heat.shape, bool)
    red[:20, :30] = True
    assert heat[red].mean() > 0.5 > heat[~red].mean()


def test_full_resolution_mask_is_the_argmax_of_upsampled_logits():
    from vislab.data.palettes import Palette
    from vislab.segment import predict_mask

    # two low-resolution pixels; class 1 never wins there but wins between them once upsampled
    low = torch.tensor([[[[2.0, 0.0]], [[1.3, 1.3]], [[0.0, 2.0]]]])  # (1, K=3, 1, 2)
    segmenter = _segmenter(_Fixed(low), ["a", "b", "c"], Palette.for_classes(["a", "b", "c"]), (3, 1, 10))
    mask, probs = predict_mask(segmenter, torch.zeros(3, 1, 10, dtype=torch.uint8), with_probs=True)
    assert mask[0].tolist() == [0, 0, 0, 0, 1, 1, 2, 2, 2, 2]
    assert probs.shape == (3, 1, 10) and torch.allclose(probs.sum(0), torch.ones(1, 10))


def test_segment_files_on_planted_regions(tmp_path, monkeypatch):
    import vislab.viz.masks as vseg
    from vislab.segment import segment_images

    image = np.zeros((40, 60, 3), np.uint8)
    image[:20, :30] = (255, 0, 0)     # 600 px red
    image[:20, 30:] = (0, 255, 0)     # 600 px green
    image[20:, :16] = (0, 0, 255)     # 320 px blue; the rest (880 px) class zero
    image[20:, 16:] = (90, 60, 30)
    Image.fromarray(image).save(tmp_path / "scene.png")
    (tmp_path / "junk.jpg").write_bytes(b"\x00\x01")
    legends = []
    original = vseg.plot_legend
    monkeypatch.setattr(vseg, "plot_legend", lambda names, colors, path, shares=None, title="":
                        legends.append((Path(path).name, list(shares) if shares is not None else None))
                        or original(names, colors, path, shares, title))
    out = tmp_path / "out"
    result = segment_images("planted", [tmp_path / "scene.png", tmp_path / "junk.jpg"], out, beta=0.6,
                            class_maps=["red"], segmenter=_planted_segmenter())
    assert result.files[str(tmp_path / "scene.png")][0] == out / "scene_mask.png"
    expected = {"zero": 880 / 2400, "red": 600 / 2400, "green": 600 / 2400, "blue": 320 / 2400}
    with open(out / "pixel_shares.csv") as handle:
        rows = list(csv.DictReader(handle))
    scene = {r["class"]: (int(r["pixels"]), float(r["share"])) for r in rows if r["image"].endswith("scene.png")}
    assert scene == {k: (round(v * 2400), pytest.approx(v, abs=1e-6)) for k, v in expected.items()}
    assert {r["class"]: int(r["pixels"]) for r in rows if r["image"] == "(all)"} == {"zero": 880, "red": 600,
                                                                                    "green": 600, "blue": 320}
    assert dict(legends)["scene_legend.png"] == pytest.approx([880 / 2400, 0.25, 0.25, 320 / 2400])
    assert vseg.legend_labels(["zero", "red"], [0.375, 0.25]) == ["0: zero  37.50 %", "1: red  25.00 %"]
    mask = Image.open(out / "scene_mask.png")
    assert mask.mode == "P" and mask.size == (60, 40)  # the input's full size
    ids = np.asarray(mask)
    assert ids[5, 5] == 1 and ids[5, 50] == 2 and ids[30, 5] == 3 and ids[30, 40] == 0
    assert mask.getpalette()[3:6] == [200, 0, 0]
    blended = np.asarray(Image.open(out / "scene_overlay.png")).astype(int)
    colour = np.asarray(Image.open(out / "scene_color.png")).astype(int)
    for y, x in ((5, 5), (5, 50), (30, 5), (30, 40)):  # cv2.addWeighted(image, 1.0, colour, 0.6, 0)
        assert blended[y, x].tolist() == np.clip(np.rint(image[y, x] + 0.6 * colour[y, x]), 0, 255).tolist()
    assert colour[30, 5].tolist() == [10, 20, 250]
    for name in ("scene_panel.png", "scene_prob_red.png", "legend.png"):
        assert (out / name).stat().st_size > 1000
    assert [Path(p).name for p, _ in result.bad_files] == ["junk.jpg"]
    assert "junk.jpg" in (out / "bad_files.csv").read_text()


@pytest.fixture(scope="module")
def lraspp_weights(tmp_path_factory):
    """torchvision's LR-ASPP with random weights (none can be downloaded here), saved as safetensors."""
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = torchvision.models.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                                       num_classes=21)
    path = tmp_path_factory.mktemp("weights") / "lraspp.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path, model.eval()


def test_segment_torchvision_weights_match_a_raw_torchvision_loop(tmp_path, lraspp_weights):
    import skimage.data
    import torchvision

    from vislab.segment import segment_images

    path, reference = lraspp_weights
    picture = skimage.data.astronaut()[::4, ::3]  # 128 x 171: not the model's size
    Image.fromarray(np.ascontiguousarray(picture)).save(tmp_path / "astronaut.png")
    result = segment_images("lraspp_mobilenet_v3_large", [tmp_path / "astronaut.png"], tmp_path / "out",
                            weights=str(path), precision="fp32", panels=False)
    mask = np.asarray(Image.open(tmp_path / "out" / "astronaut_mask.png"))
    assert mask.shape == picture.shape[:2]
    transform = torchvision.models.segmentation.LRASPP_MobileNet_V3_Large_Weights.DEFAULT.transforms()
    with torch.inference_mode():
        x = transform(torch.from_numpy(picture).permute(2, 0, 1))[None]
        logits = reference(x)["out"]
        logits = torch.nn.functional.interpolate(logits, size=picture.shape[:2], mode="bilinear", align_corners=False)
    expected = logits.argmax(1)[0].numpy()
    assert (mask == expected).mean() > 0.999
    assert list(result.shares[str(tmp_path / "astronaut.png")])[0] == "__background__"


def test_a_segmentation_data_mistake_says_what_the_folder_is(tmp_path, capsys):
    """--task segmentation with a missing folder, a file, or a folder of class folders: one line saying which,
    and for class folders the fix (drop --task segmentation)."""
    from vislab.cli import main

    image = np.zeros((8, 8, 3), np.uint8)
    for folder in (tmp_path / "classes" / "cat", tmp_path / "split" / "train" / "dog"):
        folder.mkdir(parents=True)
        Image.fromarray(image).save(folder / "a.png")
    Image.fromarray(image).save(tmp_path / "one.png")
    said = {"missing": "no such folder", "one.png": "a file;", "classes": "drop --task segmentation",
            "split": "drop --task segmentation", "digits": "a built-in classification set"}
    for name, words in said.items():
        data = name if name == "digits" else str(tmp_path / name)
        assert main(["train", "--task", "segmentation", "--data", data, "--epochs", "1",
                     "--out", str(tmp_path / "run")]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0] and "images/ and masks/" in err[0], err


def test_an_augment_policy_is_refused_for_segmentation(tmp_path, capsys):
    """TrivialAugment/RandAugment transform the image alone: its mask would no longer match."""
    from conftest import write_segmentation_set
    from vislab.cli import main

    data = write_segmentation_set(tmp_path / "data", count=4, size=16)
    for command in (["train", "--epochs", "1", "--out", str(tmp_path / "run")],
                    ["augment-preview", "--out", str(tmp_path / "preview.png")]):
        assert main([*command, "--task", "segmentation", "--data", str(data), "--augment-policy",
                     "trivialaugment"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "move an image but not its mask" in err[0] and "--rotation" in err[0], err
    assert not (tmp_path / "run").exists() and not (tmp_path / "preview.png").exists()


def test_segment_errors_are_clear(tmp_path, lraspp_weights):
    from vislab.cli import main

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x.png")
    assert main(["segment", "no_such_model", str(tmp_path / "x.png"), "--out", str(tmp_path / "o")]) == 1
    assert main(["segment", "lraspp_mobilenet_v3_large", str(tmp_path / "x.png"), "--out", str(tmp_path / "o"),
                 "--weights", str(tmp_path / "missing.safetensors")]) == 1
    assert main(["segment", "lraspp_mobilenet_v3_large", str(tmp_path / "x.png"), "--out", str(tmp_path / "o"),
                 "--weights", str(lraspp_weights[0]), "--class-maps", "roadd"]) == 1


def test_segment_torchvision_offline_fails_before_a_download_starts(tmp_path, monkeypatch, capfd):
    """Offline with nothing in torch's cache: one error naming the URL and --weights, no "Downloading:" line."""
    import vislab.models.pretrained as pretrained
    from vislab.cli import main

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    hosts = []
    monkeypatch.setattr(pretrained, "_hub_reachable", lambda host="", timeout=3.0: hosts.append(host) or False)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x.png")
    assert main(["segment", "lraspp_mobilenet_v3_large", str(tmp_path / "x.png"), "--out", str(tmp_path / "o")]) == 1
    err = capfd.readouterr().err
    assert hosts == ["download.pytorch.org"]
    assert "Downloading" not in err and "Traceback" not in err
    assert "cannot reach download.pytorch.org" in err and "--weights FILE" in err
    assert "lraspp_mobilenet_v3_large-d234d4ea.pth" in err


# --------------------------------------------------------------------------- SegFormer from a local folder
def test_segformer_local_folder_and_offline_hub_error(tmp_path):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    from vislab.cli import main
    from vislab.data.palettes import CITYSCAPES
    from vislab.segment import segment_images

    names = [row[0] for row in CITYSCAPES]
    config = SegformerConfig(num_labels=19, id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
                             depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 24, 32], decoder_hidden_size=32,
                             num_attention_heads=[1, 1, 1, 1])
    torch.manual_seed(0)
    SegformerForSemanticSegmentation(config).save_pretrained(tmp_path / "segformer")
    SegformerImageProcessor(size={"height": 64, "width": 64}).save_pretrained(tmp_path / "segformer")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (45, 70, 3), dtype=np.uint8)).save(tmp_path / "s.png")
    result = segment_images(f"hf:{tmp_path / 'segformer'}", [tmp_path / "s.png"], tmp_path / "out", panels=False,
                            class_maps=["road"])
    mask = Image.open(tmp_path / "out" / "s_mask.png")
    assert mask.size == (70, 45) and mask.mode == "P"
    assert mask.getpalette()[:3] == [128, 64, 128]  # road's Cityscapes colour: the palette matched by names
    assert sum(result.shares[str(tmp_path / "s.png")].values()) == pytest.approx(1.0)
    assert (tmp_path / "out" / "s_prob_road.png").is_file()
    # a hub name on this offline machine: a clear error (how to get it, --weights), no traceback
    code = main(["segment", "hf:nvidia/segformer-b0-finetuned-cityscapes-1024-1024", str(tmp_path / "s.png"),
                 "--out", str(tmp_path / "o2")])
    assert code == 1


def test_unet_encoder_gets_the_shipped_lite0_weights():
    from vislab.models.pretrained import create_pretrained_timm
    from vislab.models.segmentation_nets import create_segmentation_model

    net = create_segmentation_model("unet", num_classes=4, in_chans=3, pretrained=True)
    reference = create_pretrained_timm("efficientnet_lite0", num_classes=1000)
    encoder = net.net.encoder.model.state_dict()
    assert torch.equal(encoder["conv_stem.weight"], reference.state_dict()["conv_stem.weight"])
    assert net.vislab_preprocessing.mean == (0.5, 0.5, 0.5)  # the lukemelas weights' [-1, 1] inputs
    assert net(torch.zeros(1, 3, 36, 52)).shape == (1, 4, 36, 52)  # padded to the stride inside, not refused


# --------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_train_evaluate_report_compare_segment_end_to_end(tmp_path):
    from vislab.cli import main
    from vislab.data.composites import make_fashion_composites

    conftest = pytest.importorskip("conftest")
    if not conftest.HAVE_FMNIST:
        pytest.skip("Fashion-MNIST files absent")
    data = make_fashion_composites(tmp_path / "data", train=24, test=8, size=32, seed=1)
    run = tmp_path / "run"
    code = main(["train", "--task", "segmentation", "--data", str(data), "--model", "unet",
                 "--model-opt", "decoder_channels=[16,16,8,8,8]", "--epochs", "2", "--batch-size", "8",
                 "--lr", "0.01", "--val-split", "4", "--monitor", "val_miou", "--patience", "5", "--hflip",
                 "--rotation", "10", "--class-weights", "auto", "--loss", "ce+dice", "--out", str(run),
                 "--no-progress"])
    assert code == 0
    header = (run / "history.csv").read_text().splitlines()[0].split(",")
    assert "val_miou" in header and "train_pixel_acc" in header
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["miou"] <= 1 and metrics["task"] == "segmentation" and len(metrics["per_class"]) == 11
    spec = json.loads((run / "model.json").read_text())
    assert spec["task"] == "segmentation" and len(spec["palette"]) == 11
    assert spec["task_options"]["loss"] == "ce+dice" and len(spec["task_options"]["class_weights"]) == 11
    audit = json.loads((run / "audit.json").read_text())
    assert set(audit["masks"]) == {"train", "val", "test"} and "images_without_foreground" in audit["masks"]["test"]
    page = (run / "report.html").read_text()
    assert "mIoU" in page and "mean over classes of data-set-level IoU" in page and "seg_worst.png" in page
    for name in ("seg_class_iou.png", "seg_confusion_matrix.png", "seg_samples.png", "seg_worst.png"):
        assert (run / "plots" / name).is_file()
    assert main(["evaluate", str(run), "--split", "val"]) == 0
    val = json.loads((run / "metrics_val.json").read_text())
    assert val["num_samples"] == 4
    # the history's val_loss of the kept epoch is evaluate's val loss (not the weighted ce+dice that trained;
    # within 1 %: training's pass may run under bf16 autocast)
    rows = [row for row in csv.DictReader((run / "history.csv").open())
            if abs(float(row["val_miou"]) - val["miou"]) < 1e-4]
    assert rows and any(float(row["val_loss"]) == pytest.approx(val["loss"], rel=1e-2) for row in rows), (
        [row["val_loss"] for row in rows], val["loss"])
    assert main(["compare", str(run), "--out", str(tmp_path / "board")]) == 0
    assert "miou" in (tmp_path / "board" / "leaderboard.csv").read_text().splitlines()[0]
    big = tmp_path / "big.png"
    Image.open(data / "test" / "images" / "00000.png").resize((50, 45)).save(big)
    assert main(["segment", str(run), str(big), "--out", str(tmp_path / "seg"), "--no-panels"]) == 0
    assert Image.open(tmp_path / "seg" / "big_mask.png").size == (50, 45)
    # Grad-CAM for a class over its predicted region (pytorch-grad-cam's SemanticSegmentationTarget)
    assert main(["explain", str(run), str(big), "--target", "Trouser", "--out", str(tmp_path / "explain")]) == 0
    assert list((tmp_path / "explain").glob("big_Trouser_gradcam.png"))


def test_channels_last_logits_give_the_same_full_resolution_mask():
    """The predictor's fast path keeps a model's channels_last output through the upsampling."""
    from vislab.data.palettes import Palette
    from vislab.segment import predict_mask

    low = torch.randn(1, 5, 7, 9, generator=torch.Generator().manual_seed(0))
    names = list("abcde")
    image = torch.zeros(3, 30, 41, dtype=torch.uint8)
    palette = Palette.for_classes(names)
    plain = predict_mask(_segmenter(_Fixed(low), names, palette, (3, 30, 41)), image, True)
    last = predict_mask(_segmenter(_Fixed(low.contiguous(memory_format=torch.channels_last)), names, palette,
                                   (3, 30, 41)), image, True)
    assert plain[0].shape == (30, 41) and torch.equal(plain[0], last[0])
    assert torch.allclose(plain[1], last[1])


def test_a_folder_is_segmented_in_batches_without_per_image_set_up(tmp_path, monkeypatch):
    """One forward per image size, not per image; masks equal those of each image alone."""
    from vislab.segment import segment_images

    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(tmp_path / f"a{i}.png")
    Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "small.png")
    segmenter = _planted_segmenter()
    calls = []
    original = segmenter.predictor.outputs
    monkeypatch.setattr(segmenter.predictor, "outputs", lambda images: calls.append(len(images)) or original(images))
    result = segment_images(None, [tmp_path], tmp_path / "out", segmenter=segmenter, panels=False)
    assert sorted(calls) == [1, 6] and len(result.files) == 7
    alone = tmp_path / "alone"
    segment_images(None, [tmp_path / "a3.png"], alone, segmenter=segmenter, panels=False)
    assert np.array_equal(np.asarray(Image.open(alone / "a3_mask.png")),
                          np.asarray(Image.open(tmp_path / "out" / "a3_mask.png")))
    assert Image.open(tmp_path / "out" / "small_mask.png").size == (30, 20)


def test_predict_on_a_segmentation_run_says_segment_writes_its_masks(tmp_path, capsys):
    """`vislab predict` answers one class per image; a segmentation run (or its ONNX graph) gets the command
    that answers per pixel, not an empty table."""
    from vislab import api
    from vislab.cli import main

    from conftest import write_segmentation_set

    write_segmentation_set(tmp_path / "seg")
    run = tmp_path / "run"
    api.train(data=str(tmp_path / "seg"), task="segmentation", model="unet", epochs=1, out=str(run),
              evaluate=False, seed=0, model_options={"decoder_channels": [8, 8, 8, 8, 8]})
    capsys.readouterr()
    assert main(["predict", str(run), str(tmp_path / "seg" / "images" / "s0.png")]) == 1
    err = capsys.readouterr().err
    assert f"`vislab segment {run} IMAGES --out DIR` writes its masks" in err and "Traceback" not in err, err


def test_the_region_score_is_pytorch_grad_cams_and_its_grad_cam_the_same():
    """vislab's RegionScore gives pytorch-grad-cam's SemanticSegmentationTarget's score, and Grad-CAM through
    it the same map as pytorch-grad-cam's GradCAM, on a small segmentation network."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    from vislab.explain.attribution import grad_cam
    from vislab.explain.targets import TargetLayer
    from vislab.tasks.segmentation import RegionScore

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 4, 3, padding=1)).eval()
    inputs = torch.rand(1, 3, 12, 16)
    output = net(inputs)[0]
    region = (output.argmax(0) == 2).float().numpy()
    assert region.any()
    ours, theirs = RegionScore(2, region), SemanticSegmentationTarget(2, region)
    assert float(ours(output)) == pytest.approx(float(theirs(output)))
    with GradCAM(model=net, target_layers=[net[0]]) as cam:
        expected = cam(input_tensor=inputs, targets=[theirs])[0]
    got = grad_cam(net, inputs, ours, TargetLayer("0", net[0]))
    assert np.allclose(got, expected, atol=1e-5)
