"""``vislab evaluate``: a run folder + data -> metrics.json, figures, misclassified.csv, report.html."""

from __future__ import annotations

from pathlib import Path

import yaml

from vislab.config import config_from_dict
from vislab.data.sources import DataError, load_dataset
from vislab.evaluate.metrics import classification_metrics, save_metrics
from vislab.evaluate.predict import Predictor
from vislab.runs import load


def evaluate_run(run_dir, data: str | None = None, dataset=None, split: str = "test", batch_size: int = 256,
                 device: str = "auto", console=None, figures: bool = True, report: bool = True) -> dict:
    """Evaluate the run's model on ``split`` of its own data (or ``data``, a source like ``--data``).

    Returns the metrics dict (also written to ``run_dir/metrics.json``).
    """
    import numpy as np
    import torch

    run_dir = Path(run_dir)
    loaded = load(run_dir, device="cpu")
    cfg = config_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    if dataset is None:
        if data is not None:
            cfg.data.source = data
            cfg.data.test_csv = None
        dataset = load_dataset(cfg.data, seed=cfg.seed)
    if split not in dataset.splits:
        raise DataError(f"{cfg.data.source}: has no {split!r} split (has {', '.join(dataset.splits)}); "
                        "set --test-split when training or give --data with a test/ folder")
    if list(dataset.class_names) != list(loaded.class_names):
        raise DataError(f"the data's classes {dataset.class_names[:5]}... differ from the model's "
                        f"{loaded.class_names[:5]}...; evaluate on data with the same class folders")
    predictor = Predictor(loaded, device=device, tta_flip=cfg.train.tta_flip)
    data_split = dataset.splits[split]
    predictions = predictor.predict_split(data_split, batch_size=batch_size, workers=cfg.data.workers)
    probs = torch.from_numpy(predictions.probs).clamp_min(1e-12)
    labels = torch.from_numpy(predictions.labels)
    loss = float(torch.nn.functional.nll_loss(probs.log(), labels))
    metrics = classification_metrics(predictions.labels, predictions.probs, loaded.class_names, loss=loss)
    metrics["split"] = split
    metrics["num_images"] = int(len(labels))
    save_metrics(metrics, run_dir)
    np.savez_compressed(run_dir / "predictions.npz", labels=predictions.labels, probs=predictions.probs,
                        sources=np.array(predictions.sources))
    if figures:
        from vislab.evaluate.figures import write_evaluation_figures

        def images_for(indices):
            convert = predictor.preprocessing.convert_channels
            return torch.stack([convert(data_split.load(int(i))) if data_split.in_memory
                                else convert(_display(data_split.load(int(i)))) for i in indices])

        write_evaluation_figures(predictions, loaded.class_names, metrics, images_for, run_dir)
        _explanation_panels(loaded, predictions, data_split, run_dir, seed=cfg.seed)
    if report:
        from vislab.report.html import build_report

        build_report(run_dir)
    if console is not None:
        console.print(f"evaluated {len(labels):,} {split} images: accuracy {metrics['accuracy']:.4f}, "
                      f"loss {metrics['loss']:.4f} -> {run_dir / 'metrics.json'}")
    return metrics


def _explanation_panels(loaded, predictions, split, run_dir: Path, seed: int, count: int = 8) -> None:
    """Grad-CAM for a seeded sample of test images and for the most confidently wrong ones."""
    import numpy as np

    from vislab.explain import explain_samples

    names = loaded.class_names
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(predictions.labels), size=min(count, len(predictions.labels)), replace=False)
    wrong = np.flatnonzero(predictions.predicted != predictions.labels)
    worst = wrong[np.argsort(-predictions.probs[wrong].max(1))][:count]
    out = run_dir / "plots" / "explain"
    for indices, filename in ((sample, "gradcam_samples.png"), (worst, "gradcam_most_wrong.png")):
        if len(indices):
            explain_samples(loaded, [split.load(int(i)) for i in indices], out,
                            titles=[f"true: {names[predictions.labels[i]]}" for i in indices], filename=filename)


def _display(image):
    """File images for grids: a common 96 px square, colour kept."""
    import torch.nn.functional as F

    return F.interpolate(image.unsqueeze(0).float(), size=(96, 96), mode="bilinear",
                         antialias=True)[0].round().clamp(0, 255).byte()
