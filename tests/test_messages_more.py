"""Messages a new user met: an image over Pillow's decompression-bomb limit (serve names --max-pixels, predict
says the size and the limit), compare's advice for another data set's evaluation and for a run whose model.json
is damaged, and a segmentation set named by its mask IDs evaluated with a run that has class names."""

from __future__ import annotations

import json
import shutil
import struct
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image

from conftest import digits_arrays, write_image, write_segmentation_set
from vislab.cli import main

TINY = ["--data", "digits", "--model", "mlp", "--epochs", "1", "--max-per-class", "20", "--no-figures",
        "--no-progress"]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def claimed_png(width: int, height: int) -> bytes:
    """A 1-bit PNG whose header claims ``width`` x ``height`` pixels, a few bytes long: no pixels allocated."""
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + _chunk(b"IDAT", zlib.compress(b"\0" * 100)) + _chunk(b"IEND", b"")


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _flat(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """``runs/a`` (trained on digits, also evaluated on ``other``: metrics_other_test.json) and ``runs/b``
    (trained, not evaluated on ``other``), both tiny mlps."""
    work = tmp_path_factory.mktemp("msg")
    runs = work / "runs"
    for name in ("a", "b"):
        assert main(["train", *TINY, "--out", str(runs / name)]) == 0
    images, labels = digits_arrays(per_class=3)
    for i, (image, label) in enumerate(zip(images, labels)):
        write_image(work / "other" / str(label) / f"d{i}.png", image, size=8)
    assert main(["evaluate", str(runs / "a"), "--data", str(work / "other"), "--no-figures"]) == 0
    assert (runs / "a" / "metrics_other_test.json").is_file()
    return runs


# --------------------------------------------------------------------------- decompression bombs


def test_serve_names_max_pixels_for_an_image_over_pillows_bomb_limit(runs):
    pytest.importorskip("fastapi", reason="pip install 'vislab[deploy]'")
    from fastapi.testclient import TestClient

    from vislab.serve import ServeConfig, create_app

    def ready(client):
        deadline = time.monotonic() + 60
        while client.get("/health").status_code != 200:
            assert time.monotonic() < deadline, "the server never became ready"
            time.sleep(0.05)
        return client

    def post(client, name, data):
        response = client.post("/v1/predict", files={"file": (name, data, "image/png")})
        assert response.status_code == 413, response.text
        assert response.json()["error"]["code"] == "too_many_pixels"
        return response.json()["error"]["message"]

    app = create_app(str(runs / "b"), ServeConfig(max_pixels=40_000_000))
    with TestClient(app, raise_server_exceptions=False) as client:
        ready(client)
        # over twice Pillow's limit, between once and twice it, and under it: one message, one limit, one flag
        for width, height in ((20000, 20000), (10000, 10000), (8000, 8000)):
            assert post(client, "huge.png", claimed_png(width, height)) == (
                f"huge.png: {width}x{height} = {width * height} pixels; the limit is 40000000 "
                "(vislab serve --max-pixels)")
    # a --max-pixels above Pillow's limit: Pillow's holds, and the message says so, naming the flag
    app = create_app(str(runs / "b"), ServeConfig(max_pixels=500_000_000))
    with TestClient(app, raise_server_exceptions=False) as client:
        message = post(ready(client), "huge.png", claimed_png(20000, 20000))
    assert message == (f"huge.png: 20000x20000 = 400000000 pixels; the limit is {Image.MAX_IMAGE_PIXELS}, Pillow's "
                       "decompression-bomb limit, below vislab serve --max-pixels 500000000; send a smaller image")


def test_predict_says_the_size_and_pillows_limit_not_pillows_text(runs, tmp_path, capsys):
    (tmp_path / "huge.png").write_bytes(claimed_png(20000, 20000))
    images, _ = digits_arrays(per_class=1)
    write_image(tmp_path / "ok.png", images[0], size=8)
    huge, ok = str(tmp_path / "huge.png"), str(tmp_path / "ok.png")
    assert main(["predict", str(runs / "b"), huge, ok, "--format", "json"]) == 0
    rows = {row["file"]: row for row in json.loads(capsys.readouterr().out)}
    limit = Image.MAX_IMAGE_PIXELS
    assert rows[huge]["error"] == (f"20000x20000 = 400000000 pixels, over Pillow's decompression-bomb limit of "
                                   f"{limit}; downscale the image below {limit} pixels")
    assert rows[ok].get("top")
    # the table says the same, Pillow's own text nowhere
    assert main(["predict", str(runs / "b"), huge, ok]) == 0
    out = _flat(capsys.readouterr().out)
    assert "decompression-bomb limit of" in out and "Image size" not in out and "DOS attack" not in out


# --------------------------------------------------------------------------- compare's advice


def test_compare_names_the_data_of_the_evaluation_asked_for(runs, capsys):
    other = runs.parent / "other"
    assert main(["compare", str(runs / "a"), str(runs / "b"), "--evaluation", "other_test",
                 "--out", str(runs.parent / "board")]) == 0
    out = capsys.readouterr().out
    assert (f"not evaluated (no metrics_other_test.json), so not ranked: b: run `vislab evaluate RUN --data "
            f"{other}`") in _lines(out), out


def test_compare_blames_a_damaged_model_json_not_a_missing_evaluation(runs, tmp_path, capsys):
    fake = tmp_path / "fakerun"
    fake.mkdir()
    for name in ("model.safetensors", "config.yaml", "history.csv"):
        shutil.copy(runs / "b" / name, fake / name)
    (fake / "model.json").write_text('{"name": "mlp", ')
    assert main(["compare", str(fake), str(runs / "a"), "--out", str(tmp_path / "board")]) == 0
    out = capsys.readouterr().out
    said = [line for line in _lines(out) if "fakerun" in line]
    assert len(said) == 1, out
    assert said[0].startswith(f"not ranked: {fake} has no metrics.json, and `vislab evaluate` cannot write it: "
                              f"{fake / 'model.json'}: cannot be read"), out
    assert said[0].endswith("retrain, or restore the file") and "vislab evaluate RUN" not in out
    # alone: nothing to rank, and the one line says why evaluate would not help
    assert main(["compare", str(fake), "--out", str(tmp_path / "board2")]) == 1
    err = capsys.readouterr().err
    assert len(_lines(err)) == 1 and f"{fake / 'model.json'}: cannot be read" in err, err
    assert "retrain, or restore the file" in err and "vislab evaluate RUN" not in err
    # a missing model.json is named just the same
    (fake / "model.json").unlink()
    assert main(["compare", str(fake), "--out", str(tmp_path / "board3")]) == 1
    err = capsys.readouterr().err
    assert _lines(err) == [f"vislab compare: error: nothing to rank: {fake} has no metrics.json, and `vislab "
                           f"evaluate` cannot write it: {fake / 'model.json'} is missing; retrain, or restore the file"]


# --------------------------------------------------------------------------- segmentation classes


def test_segmentation_masks_named_by_their_ids_take_the_models_class_names(tmp_path, capsys):
    named, plain, more = (write_segmentation_set(tmp_path / name, count=6, size=16)
                          for name in ("seg1", "seg2", "seg5"))
    (named / "classes.txt").write_text("bg\nred\ngreen\n")
    run = tmp_path / "runs" / "seg1"
    assert main(["train", "--data", str(named), "--task", "segmentation", "--epochs", "1", "--no-figures",
                 "--no-progress", "--out", str(run)]) == 0
    capsys.readouterr()
    # mask IDs 0..2, no classes.txt: the IDs are the model's classes
    assert main(["evaluate", str(run), "--data", str(plain), "--no-figures"]) == 0, capsys.readouterr().err
    metrics = json.loads((run / "metrics_seg2_test.json").read_text())
    assert [c["class"] for c in metrics["per_class"]] == ["bg", "red", "green"]
    # an ID the model lacks: the fix, in one line
    mask = Image.open(more / "masks" / "s0.png")
    mask.putpixel((0, 0), 4)
    mask.save(more / "masks" / "s0.png")
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(more), "--no-figures"]) == 1
    err = capsys.readouterr().err
    assert _lines(err) == [f"vislab evaluate: error: {more}: its masks hold class IDs up to 4, but the model knows 3 "
                           f"classes (IDs 0..2); evaluate on masks of the model's classes, or add {more}/classes.txt "
                           "with the run's classes in order, one a line (bg, red, green): masks holding other IDs "
                           "are then skipped"]
    # other names: a classes.txt naming the model's classes is the fix
    (more / "masks" / "s0.png").unlink()
    (more / "images" / "s0.png").unlink()
    (more / "classes.txt").write_text("a\nb\nc\n")
    assert main(["evaluate", str(run), "--data", str(more), "--no-figures"]) == 1
    err = capsys.readouterr().err
    assert len(_lines(err)) == 1 and f"make {more}/classes.txt the run's classes in order" in err, err
