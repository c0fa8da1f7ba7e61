"""CIFAR-10: a VGG-like CNN without and with dropout, the over-fitting the curves show, then save and reload.

    python examples/cifar10_dropout.py            # CIFAR-10 (vislab downloads its binary release)
    python examples/cifar10_dropout.py --smoke    # 30 Fashion-MNIST images per class, offline, seconds

The network is vislab's ``vgg_like`` (3 VGG blocks of 32, 64, 128 channels, Dense 512), Adam 1e-3,
batch 128, 10 % of the training images held out to validate. Without dropout the training accuracy
keeps climbing while the validation loss turns up; ``dropout=0.25`` (after each block and the
Dense layer) narrows that gap. The run folder is the saved model: reloading it gives the same test
accuracy.

Expected, full mode (not measured by us): Keras' cifar10_cnn.py example (a 2-block relative of
this network, with dropout) publishes 75 % validation accuracy after 25 epochs and 79 % after 50.

Measured, smoke mode (201 train / 99 val / 200 test Fashion-MNIST images at 16 px, 8 epochs, batch 16; AMD
EPYC (lscpu), 2 cores, torch 2.14.1, 2026-12-02): without dropout train 0.745 / val 0.667 (gap +0.078, the
validation loss lowest at epoch 6 and up after), with dropout 0.599 / 0.707 (gap -0.108); test accuracy 0.665
and 0.655; reloaded: 0.655 again; about 23 s wall under nice on the otherwise idle machine. Floors checked:
test accuracy >= 0.40 for both (chance 0.10); the reloaded model's test accuracy equals the one measured at
the end of training.

Writes OUT/no_dropout/ and OUT/dropout/ (plots/curves.png shows the gap) and OUT/leaderboard.csv.
"""

from __future__ import annotations

from _common import Checks, fashion_folders, get_args_parser, leaderboard, print_table, run, speed, start


def main(argv=None) -> None:
    parser = get_args_parser(__doc__, "cifar10_dropout")
    parser.add_argument("--epochs", type=int, default=25, help="full mode (smoke: 8)")
    parser.add_argument("--data-dir", default=None, help="where CIFAR-10 is (or is downloaded to)")
    args = parser.parse_args(argv)
    import vislab.api as api

    out = start(args, "VGG-like CNN on CIFAR-10, without and with dropout",
                "Fashion-MNIST (30 train/val and 20 test images per class, 16 px grey) stands in for CIFAR-10; "
                "batch 16, 8 epochs")
    data = str(fashion_folders(out / "data", {"train": 30, "test": 20}, seed=args.seed)) if args.smoke else "cifar10"
    checks, results, rows = Checks(), {}, []
    for name, dropout in (("no_dropout", 0.0), ("dropout", 0.25)):
        print(f"\n== {name}: vgg_like, dropout {dropout}")
        sizes = dict(batch_size=16, val_split=0.33, epochs=8, input_size=[16, 16]) if args.smoke else \
            dict(batch_size=128, val_split=0.1, epochs=args.epochs)
        result = api.train(data=data, data_dir=args.data_dir, model="vgg_like", model_options={"dropout": dropout},
                           optimizer="adam", lr=1e-3, **sizes, seed=args.seed, out=str(out / name),
                           figures=not args.smoke, **speed(args))
        results[name] = result
        last, best = result.history[-1], min(result.history, key=lambda row: row["val_loss"])
        rows.append({"run": name, "train_acc": last["train_acc"], "val_acc": last["val_acc"],
                     "gap": last["train_acc"] - last["val_acc"], "best val_loss epoch": best["epoch"],
                     "test accuracy": result.metrics["accuracy"]})
        checks.at_least(f"{name} test accuracy", result.metrics["accuracy"], 0.40)
    print_table("over-fitting: the last epoch's train - val accuracy (the curves: OUT/<run>/plots/curves.png)",
                rows, list(rows[0]))
    leaderboard([r.run_dir for r in results.values()], out)

    saved = results["dropout"]
    loaded = api.load_model(saved.run_dir)  # model.json + model.safetensors, nothing unpickled
    print(f"reloaded {saved.run_dir}: {loaded.spec['name']}, {loaded.spec['parameters']:,} parameters, "
          f"classes {loaded.class_names}")
    again = api.evaluate(saved.run_dir, figures=False, device=args.device)["accuracy"]
    print(f"test accuracy after reloading: {again:.4f} (at the end of training: {saved.metrics['accuracy']:.4f})")
    checks.that("reloaded test accuracy", again == saved.metrics["accuracy"],
                f"{again:.4f} == {saved.metrics['accuracy']:.4f}")
    checks.verify()


if __name__ == "__main__":
    run(main)
