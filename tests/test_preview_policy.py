"""`vislab augment-preview --augment-policy ...` applies the policy to the copies, as training does."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import vislab.viz.data as viz_data
from vislab import api
from vislab.cli import main

NOTE = "no augmentation is set"


@pytest.fixture
def drawn(monkeypatch):
    """What the preview hands to its plot: the originals and their copies, as numpy arrays."""
    seen = []
    real = viz_data.plot_augment_preview

    def keep(originals, augmented, path, title=""):
        seen.append(dict(originals=[np.asarray(o).copy() for o in originals],
                         augmented=[[np.asarray(c).copy() for c in copies] for copies in augmented], title=title))
        return real(originals, augmented, path, title=title)

    monkeypatch.setattr(viz_data, "plot_augment_preview", keep)
    return seen


@pytest.fixture
def photos(tmp_path):
    """A tiny class folder of real RGB photos (skimage), 48x48."""
    import skimage.data

    for cls, names in (("cat", ("chelsea", "coffee", "rocket")), ("person", ("astronaut", "immunohistochemistry",
                                                                             "hubble_deep_field"))):
        (tmp_path / "photos" / cls).mkdir(parents=True)
        for name in names:
            Image.fromarray(getattr(skimage.data, name)()).convert("RGB").resize((48, 48)).save(
                tmp_path / "photos" / cls / f"{name}.png")
    return tmp_path / "photos"


def _changed(record) -> int:
    return sum(not np.array_equal(copy, original)
               for original, copies in zip(record["originals"], record["augmented"]) for copy in copies)


def test_cli_preview_applies_the_policy_on_grey_digits_and_repeats_with_seed(tmp_path, capsys, drawn):
    args = ["augment-preview", "--data", "digits", "--count", "2", "--versions", "3", "--augment-policy",
            "trivialaugment", "--seed", "5"]
    assert main([*args, "--out", str(tmp_path / "a.png")]) == 0
    captured = capsys.readouterr()
    assert NOTE not in captured.err + captured.out
    assert (tmp_path / "a.png").is_file()
    assert _changed(drawn[0]) > 0  # the policy changed some copies
    assert main([*args, "--out", str(tmp_path / "b.png")]) == 0
    for first, again in zip(drawn[0]["augmented"], drawn[1]["augmented"]):
        assert all(np.array_equal(x, y) for x, y in zip(first, again))  # --seed fixes every draw


def test_api_preview_applies_the_policy_as_training_does_on_rgb_photos(photos, tmp_path, drawn):
    from vislab.core.config import resolve_config
    from vislab.data.augment import Augment
    from vislab.train.loop import _augment_policy

    path = api.augment_preview(str(photos), out=str(tmp_path / "aug.png"), count=2, versions=4, seed=3,
                               augment_policy="trivialaugment", hflip=True, val_split=0, test_split=0)
    assert path.is_file()
    record = drawn[0]
    assert record["originals"][0].shape[0] == 3 and _changed(record) > 0
    # training's order from the same generator: the policy on the uint8 images, then the other augmentations
    cfg = resolve_config(overrides={"augment.policy": "trivialaugment", "augment.hflip": True})
    generator = torch.Generator().manual_seed(3)
    copies = torch.from_numpy(record["originals"][0]).unsqueeze(0).repeat(4, 1, 1, 1)
    expected = Augment(cfg.augment)(_augment_policy(cfg)(copies, generator), generator=generator)
    for copy, want in zip(record["augmented"][0], expected):
        assert np.array_equal(copy, want.numpy())


def test_without_policy_or_augmentation_the_note_stays(tmp_path, capsys, drawn):
    assert main(["augment-preview", "--data", "digits", "--count", "2", "--versions", "2", "--seed", "0",
                 "--out", str(tmp_path / "n.png")]) == 0
    assert NOTE in capsys.readouterr().err
    assert _changed(drawn[0]) == 0
