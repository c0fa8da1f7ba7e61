"""Tasks: what is learned (classification, ...), behind one interface (:mod:`vislab.tasks.base`).

The names below are read from :mod:`vislab.tasks.base` when first asked for, so that a torch-free module
of this package (:mod:`vislab.tasks.classification_metrics`, which a helper interpreter runs) imports
without torch.
"""

_BASE = ("Evaluator", "Metric", "Task", "accumulate", "get_task", "register_task", "task_names")


def task_for_config(cfg):
    """The task a config names, built with the config's task options (label smoothing, ...)."""
    from vislab.tasks.base import get_task

    t = cfg.train
    options = {"segmentation": cfg.segmentation} if getattr(cfg, "segmentation", None) is not None else {}
    return get_task(cfg.task, label_smoothing=t.label_smoothing, loss=t.loss, focal_gamma=t.focal_gamma,
                    class_weights=t.class_weights, threshold=t.threshold, threshold_metric=t.threshold_metric,
                    **options)


def __getattr__(name):
    if name in _BASE:
        from vislab.tasks import base

        return getattr(base, name)
    raise AttributeError(f"module 'vislab.tasks' has no attribute {name!r}")


__all__ = [*_BASE, "task_for_config"]
