"""Tasks: what is learned (classification, ...), behind one interface (:mod:`vislab.tasks.base`)."""

from vislab.tasks.base import Evaluator, Metric, Task, accumulate, get_task, register_task, task_names


def task_for_config(cfg) -> Task:
    """The task a config names, built with the config's task options (label smoothing, ...)."""
    options = {"segmentation": cfg.segmentation} if getattr(cfg, "segmentation", None) is not None else {}
    return get_task(cfg.task, label_smoothing=cfg.train.label_smoothing, **options)


__all__ = ["Evaluator", "Metric", "Task", "accumulate", "get_task", "register_task", "task_for_config",
           "task_names"]
