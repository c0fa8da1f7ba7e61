"""The seeds' Fashion-MNIST recipes in tf.keras: the other side of bench_recipes.py.

Runs in the TensorFlow venv that bench_recipes.py creates (benchmarks/.venv-tf); it
imports neither vislab nor torch (``_common.machine`` needs neither). Prints one JSON line: seconds per epoch (measured
by a callback around each epoch, validation included, as vislab's history.csv
``seconds``), total wall time from interpreter start, and test accuracy.

The seeds' exact Keras hyper-parameters are not in this repository; these are the
classic tutorial ones (Chollet's "Deep Learning with Python" and the Keras examples),
and bench_recipes.py passes the *same* values to ``vislab train``:

    recipe           optimizer        batch  epochs  notes
    mlp              rmsprop 1e-3     128    10      Dense512-Dense256-Dense10
    chollet_convnet  rmsprop 1e-3     64     5       listing 5.1
    vgg_like         adam 1e-3        128    10      3 VGG blocks, dropout 0.25, Dense512
    model3           adam 1e-3        128    10      seed 004's model_3, dropout 0.25/0.5

Data: pixels / 255 (no centring), the 10,000 test images to test; of the 60,000
training images, the last 10,000 validate and the rest train, or with ``--val-indices``
the ones a file lists validate (bench_recipes.py passes vislab's own split, so both
sides train on the same 50,000 images).

Usage (inside the TF venv):
    python benchmarks/keras_seeds.py --recipe chollet_convnet --epochs 5
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402  (standard library only: no vislab, no torch needed)

STARTED = time.perf_counter()  # before TensorFlow's import: wall time counts it, as for `vislab train`

RECIPES = {
    "mlp": {"optimizer": "rmsprop", "lr": 1e-3, "batch_size": 128, "epochs": 10},
    "chollet_convnet": {"optimizer": "rmsprop", "lr": 1e-3, "batch_size": 64, "epochs": 5},
    "vgg_like": {"optimizer": "adam", "lr": 1e-3, "batch_size": 128, "epochs": 10, "dropout": 0.25},
    "model3": {"optimizer": "adam", "lr": 1e-3, "batch_size": 128, "epochs": 10, "dropout": 0.25},
}


def read_idx(path: Path):
    import numpy as np

    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as handle:
        data = handle.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load(data_dir: Path, val_indices=None):
    def find(stem):
        for name in (stem + ".gz", stem):
            if (data_dir / name).exists():
                return data_dir / name
        raise FileNotFoundError(f"{data_dir}: no {stem}[.gz]")

    x_train = read_idx(find("train-images-idx3-ubyte")).astype("float32")[..., None] / 255.0
    y_train = read_idx(find("train-labels-idx1-ubyte")).astype("int64")
    x_test = read_idx(find("t10k-images-idx3-ubyte")).astype("float32")[..., None] / 255.0
    y_test = read_idx(find("t10k-labels-idx1-ubyte")).astype("int64")
    if val_indices is None:
        return (x_train[:50000], y_train[:50000]), (x_train[50000:], y_train[50000:]), (x_test, y_test)
    import numpy as np

    held = np.zeros(len(y_train), dtype=bool)
    held[np.asarray(val_indices, dtype=np.int64)] = True
    return (x_train[~held], y_train[~held]), (x_train[held], y_train[held]), (x_test, y_test)


def cap_per_class(split, count: int | None):
    """The first ``count`` images of each class (None: all), in file order."""
    import numpy as np

    if count is None:
        return split
    x, y = split
    keep = np.sort(np.concatenate([np.flatnonzero(y == c)[:count] for c in np.unique(y)]))
    return x[keep], y[keep]


def build(name: str, dropout: float):
    from tensorflow import keras
    from tensorflow.keras import layers as L

    inputs = keras.Input((28, 28, 1))
    if name == "mlp":
        x = L.Flatten()(inputs)
        x = L.Dense(512, activation="relu")(x)
        x = L.Dense(256, activation="relu")(x)
    elif name == "chollet_convnet":
        x = L.Conv2D(32, 3, activation="relu")(inputs)
        x = L.MaxPooling2D(2)(x)
        x = L.Conv2D(64, 3, activation="relu")(x)
        x = L.MaxPooling2D(2)(x)
        x = L.Conv2D(64, 3, activation="relu")(x)
        x = L.Flatten()(x)
        x = L.Dense(64, activation="relu")(x)
    elif name == "vgg_like":
        x = inputs
        for width in (32, 64, 128):
            x = L.Conv2D(width, 3, padding="same", activation="relu")(x)
            x = L.Conv2D(width, 3, padding="same", activation="relu")(x)
            x = L.MaxPooling2D(2)(x)
            x = L.Dropout(dropout)(x)
        x = L.Flatten()(x)
        x = L.Dense(512, activation="relu")(x)
        x = L.Dropout(dropout)(x)
    elif name == "model3":
        x = inputs
        for width, convs in ((64, 2), (128, 2), (256, 1)):
            for _ in range(convs):
                x = L.Conv2D(width, 3, padding="same", activation="relu")(x)
            x = L.MaxPooling2D(2)(x)
            x = L.Dropout(dropout)(x)
        x = L.Flatten()(x)
        x = L.Dense(256, activation="relu")(x)
        x = L.Dropout(2 * dropout)(x)
    else:
        raise SystemExit(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    outputs = L.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", required=True, choices=sorted(RECIPES))
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-per-class", type=int, default=None,
                        help="keep at most N training and N validation images per class (as vislab's flag)")
    parser.add_argument("--val-indices", default=None,
                        help="a .npy file of the training file's image indices to validate on (default: the last 10,000)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    from tensorflow import keras

    recipe = dict(RECIPES[args.recipe])
    epochs = args.epochs or recipe["epochs"]
    keras.utils.set_random_seed(args.seed)
    val_indices = None
    if args.val_indices:
        import numpy as np

        val_indices = np.load(args.val_indices, allow_pickle=False)
    train, val, test = load(Path(args.data_dir), val_indices)
    train, val = cap_per_class(train, args.max_per_class), cap_per_class(val, args.max_per_class)
    model = build(args.recipe, recipe.get("dropout", 0.0))
    # The seed fixes the initial weights, not the batch order. With a global TensorFlow seed, fit()'s shuffle
    # (tf.random.shuffle inside the tf.data map, its iterator made anew each epoch) draws the same
    # permutation every epoch, and a network trained on one fixed batch order overfits it (docs/benchmarks.md).
    # A tutorial run sets no seed, so its order changes every epoch, as vislab's does.
    tf.random.set_seed(None)
    optimizer = (keras.optimizers.RMSprop(recipe["lr"]) if recipe["optimizer"] == "rmsprop"
                 else keras.optimizers.Adam(recipe["lr"]))
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.start)

    seconds: list[float] = []
    history = model.fit(*train, batch_size=recipe["batch_size"], epochs=epochs, validation_data=val,
                        callbacks=[EpochTimer()], verbose=0)
    test_loss, test_acc = model.evaluate(*test, batch_size=512, verbose=0)
    print(json.dumps({
        "side": "tf.keras", "recipe": args.recipe, "epochs": epochs, "batch_size": recipe["batch_size"],
        "optimizer": recipe["optimizer"], "lr": recipe["lr"],
        "seconds_per_epoch": round(sum(seconds) / len(seconds), 3),
        "seconds_per_epoch_after_first": round(sum(seconds[1:]) / max(len(seconds) - 1, 1), 3) if len(seconds) > 1
        else None,
        "epoch_seconds": [round(s, 3) for s in seconds],
        "val_accuracy": float(history.history["val_accuracy"][-1]), "test_accuracy": float(test_acc),
        "test_loss": float(test_loss), "wall_s": round(time.perf_counter() - STARTED, 2),
        "max_per_class": args.max_per_class, "machine": machine(),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
