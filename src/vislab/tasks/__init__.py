"""Tasks: what is learned (classification, ...), behind one interface (:mod:`vislab.tasks.base`)."""

from vislab.tasks.base import Evaluator, Metric, Task, accumulate, get_task, register_task, task_names


def task_for_config(cfg) -> Task:
    """The task a config names, built with the config's task options (label smoothing, ...)."""
    t = cfg.train
    options = {"segmentation": cfg.segmentation} if getattr(cfg, "segmentation", None) is not None else {}
    return get_task(cfg.task, label_smoothing=t.label_smoothing, loss=t.loss, focal_gamma=t.focal_gamma,
                    class_weights=t.class_weights, threshold=t.threshold, threshold_metric=t.threshold_metric,
                    **options)


__all__ = ["Evaluator", "Metric", "Task", "accumulate", "get_task", "register_task", "task_for_config",
           "task_names"]
