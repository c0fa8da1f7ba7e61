"""Whole jobs, each one call: train -> evaluate -> figures -> report.

The layers below each do one thing: :func:`vislab.train.loop.train_run` trains and writes the
model, :func:`vislab.evaluate.runner.measure_run` measures, the task draws its figures,
:mod:`vislab.explain` draws Grad-CAM panels and :mod:`vislab.report` writes the page.
This module strings them together; the CLI and :mod:`vislab.api` call it.

Example:
    >>> from vislab.core.config import resolve_config
    >>> cfg = resolve_config(overrides={"data.source": "digits", "model.name": "chollet_convnet",
    ...                                 "train.epochs": 1, "out": "/tmp/vislab-pipeline-doc"})
    >>> result = train(cfg, progress=False)     # doctest: +SKIP
    >>> result.metrics["accuracy"] > 0.5        # doctest: +SKIP
    True
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch


def train(cfg, resume=None, progress: bool = True, evaluate: bool = True, console=None, epochs: int | None = None,
          figures: bool = True):
    """Train (or resume) a run, then evaluate it on the test split with figures and the report.

    Returns the :class:`~vislab.train.loop.FitResult`, its ``metrics`` filled when evaluated.
    ``figures=False``: no figures but the training curves (the audit's, the task's and the explanation
    panels are skipped; audit.json, metrics.json and the report are written).
    """
    from vislab.core.console import console as vislab_console
    from vislab.train.loop import train_run

    console = console or vislab_console()
    result = train_run(cfg, resume=resume, progress=progress, console=console, epochs=epochs, figures=figures)
    if result.dataset is None:  # not rank 0 under torchrun: nothing more to do here
        return result
    if evaluate and "test" in result.dataset.splits:
        try:
            device = _config_device(result.run_dir)
            result.metrics = run_evaluation(result.run_dir, dataset=result.dataset, console=console, device=device,
                                            figures=figures)
        except KeyboardInterrupt:
            _evaluation_interrupted(result.run_dir, figures)
            raise
    else:
        from vislab.report.html import build_report

        build_report(result.run_dir)
    _print_final_summary(console, result)
    return result


def run_evaluation(run_dir, data: str | None = None, dataset=None, split: str = "test", batch_size: int = 256,
                   device: str = "auto", console=None, figures: bool = True, report: bool = True,
                   task_options: dict | None = None, data_options: dict | None = None) -> dict:
    """Evaluate a run folder: the task's metrics, its figures, Grad-CAM panels and report.html.

    The run's own test split writes metrics.json, its figures under plots/ (misclassified.csv beside
    metrics.json) and its panels under plots/explain/; another split or data set writes
    metrics_<name>.json, its figures under plots/<name>/ (misclassified_<name>.csv beside
    metrics_<name>.json) and its panels under plots/explain/<name>/. The metrics file lists the figures
    drawn (``figures``), so that the report can name any that went missing.
    """
    from vislab.evaluate.runner import measure_run

    # the explanation panels are computed here while a helper computes the metrics, then draws the figures
    evaluation = measure_run(run_dir, data=data, dataset=dataset, split=split, batch_size=batch_size,
                             device=device, console=console, task_options=task_options, data_options=data_options,
                             meanwhile=write_explanations if figures else None, then=write_figures if figures else None)
    if report:
        from vislab.report.html import build_report

        build_report(run_dir)
    return evaluation.metrics


def write_figures(evaluation) -> None:
    """The task's figures for one evaluation (its metrics computed), in ``plots/`` (``plots/<name>/`` for a
    named evaluation); their paths are added to ``evaluation.figures``."""
    loaded, split, task = evaluation.loaded, evaluation.split, evaluation.loaded.task
    convert = evaluation.predictor.preprocessing.convert_channels

    def images_for(indices):
        return torch.stack([convert(split.load(int(i))) if split.in_memory else convert(_display(split.load(int(i))))
                            for i in indices])

    written = task.write_figures(evaluation.evaluator, evaluation.metrics, loaded.class_names, images_for,
                                 evaluation.run_dir, name=evaluation.name)
    evaluation.figures.extend(p for p in written or [] if _is_figure(p))


def write_explanations(evaluation) -> None:
    """The explanation panels of one evaluation (Grad-CAM, or occlusion for a model without feature maps):
    the task picks the images from the predictions. They go to ``plots/explain/`` (``plots/explain/<name>/``
    for a named evaluation) and their paths are added to ``evaluation.figures``."""
    loaded, split, task = evaluation.loaded, evaluation.split, evaluation.loaded.task
    samples = task.explanation_samples(evaluation.evaluator, seed=evaluation.seed)
    if samples:
        from vislab.explain import explain_samples

        explain_dir = evaluation.run_dir / "plots" / "explain" / evaluation.name
        for indices, filename, titles in samples:
            written = explain_samples(loaded, [split.load(int(i)) for i in indices], explain_dir, titles=titles,
                                      filename=filename)
            if _is_figure(written):
                evaluation.figures.append(written)


def _is_figure(path) -> bool:
    return isinstance(path, (str, Path)) and Path(path).suffix.lower() in (".png", ".jpg", ".jpeg")


def _display(image):
    """File images for grids: a common 96 px square, colour kept."""
    import torch.nn.functional as F

    return F.interpolate(image.unsqueeze(0).float(), size=(96, 96), mode="bilinear",
                         antialias=True)[0].round().clamp(0, 255).byte()


def _config_device(run_dir: Path) -> str:
    from vislab.runs import read_config

    return read_config(run_dir).train.device


def _evaluation_interrupted(run_dir: Path, figures: bool) -> None:
    """Interrupted while evaluating after training: the model is saved, so a line with the command that does
    the same evaluation (its device, figures or not) and writes the report."""
    try:
        device = _config_device(run_dir)
    except Exception:  # noqa: BLE001 - the line is advice; `vislab evaluate` itself says what is wrong
        device = "auto"
    flags = (f" --device {device}" if device != "auto" else "") + ("" if figures else " --no-figures")
    print(f"vislab train: the model is saved in {run_dir}; its evaluation on the test split was interrupted: "
          f"finish it and the report with `vislab evaluate {run_dir}{flags}`", file=sys.stderr, flush=True)


def _print_final_summary(console, result) -> None:
    from vislab.runs import read_spec
    from vislab.tasks import get_task

    history, metrics = result.history, result.metrics
    task = get_task(read_spec(result.run_dir)["task"])
    seconds = sum(row["seconds"] for row in history)
    last = history[-1] if history else {}
    params = (result.parameters or {}).get("total")
    lines = [f"run folder: {result.run_dir}",
             f"epochs: {len(history)}{' (stopped early)' if result.stopped_early else ''}"
             f"  training time: {seconds:.1f}s" + (f"  parameters: {params:,}" if params is not None else "")]
    # the numbers of the epoch whose weights the model holds: the best one when early stopping restored it
    kept = _model_row(history, result)
    val = [f"val_{m.name}: {kept[f'val_{m.name}']:.4f}" for m in task.metrics if kept.get(f"val_{m.name}") is not None]
    if kept is not last:
        lines.append(f"best epoch {int(kept['epoch'])} (restored: the model holds its weights)"
                     + ("  " + "  ".join(val) + f"  val_loss: {kept['val_loss']:.4f}" if val else ""))
    elif val:
        lines.append("last " + "  ".join(val) + f"  val_loss: {last['val_loss']:.4f}")
    if metrics:
        lines.append(task.end_of_run_line(metrics))
        if result.dataset is not None and "train" in result.dataset.splits:
            lines += task.imbalance_lines(metrics, result.dataset.counts()["train"])
    console.rule("summary")
    for line in lines:
        console.print(line)
    sys.stdout.flush()


def _model_row(history: list[dict], result) -> dict:
    """The history row of the epoch the saved model holds: the restored best epoch's, else the last."""
    last = history[-1] if history else {}
    epoch = getattr(result, "model_epoch", None)
    if not getattr(result, "restored_best", False) or epoch is None or last.get("epoch") == epoch:
        return last
    return next((row for row in history if row.get("epoch") is not None and int(row["epoch"]) == epoch), last)
