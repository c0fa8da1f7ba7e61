"""LP-FT after the logistic-regression head, where the time budget allows; the better one on validation stays.

``--recipe transfer`` (and ``--recipe auto``'s transfer rule) fits the L-BFGS logistic-regression
head on the frozen backbone's cached features first. With ``--time-budget`` and a validation
split, what is left of the budget then fine-tunes the whole network starting from that head
(LP-FT, Kumar et al. 2022) with the settings ``benchmarks/bench_lpft.py`` measured best: AdamW,
body 1e-4 / head 1e-3, warm-up then cosine, BatchNorm statistics frozen, flips, at most 5 epochs.
Each epoch is scored on the validation split; the best fine-tuned epoch replaces the head only
when it scores higher than the head did, so the result is never below the frozen head on
validation. Measured there (40 Fashion-MNIST images per class): the head 85.0 % at 224 px, LP-FT
84.0 % at 160 px after 5 epochs, so on that data the head usually stays.

Example:
    >>> lpft_epochs(left=300, epoch_seconds=50)
    5
"""

from __future__ import annotations

import copy
import time

from vislab.core import measure
from vislab.core.config import set_value
from vislab.train.budget import epochs_that_fit

# bench_lpft.py's best: --lr 1e-4 --lr-head 1e-3 --bn eval, warm-up + cosine, flips, 5 epochs
SETTINGS = {"model.freeze": "none", "model.cache_features": False, "train.optimizer": "adamw", "train.lr": 1e-3,
            "model.lr_backbone": 1e-4, "train.weight_decay": 0.01, "model.bn": "frozen", "train.scheduler": "cosine",
            "augment.hflip": True, "train.batch_size": 32, "train.label_smoothing": 0.0, "train.tta_flip": False,
            "train.time_budget": None, "train.speed": None}
MAX_EPOCHS = 5
# a training step costs about three forward passes (forward, backward of the same size)
STEP_PER_FORWARD = 3.0


def lpft_epochs(left: float, epoch_seconds: float, done: int = 0) -> int:
    """Total fine-tuning epochs that fit in ``left`` seconds after ``done`` (at most :data:`MAX_EPOCHS`)."""
    return min(MAX_EPOCHS, done + epochs_that_fit(left, epoch_seconds))


def after_head(trainer, cfg, dataset, task, console, started: float, head_logs: dict) -> dict:
    """Fine-tune from the fitted head while the budget lasts; keep the better on validation.

    Returns the record for config.yaml (``recipe_choices["lpft"]``); ``trainer.model`` holds the kept weights.
    """
    from vislab.train.budget import refit_schedule
    from vislab.train.loop import Trainer

    metric = task.metrics[0].name
    head_score = head_logs.get(f"val_{metric}")
    record = {"head_val": head_score, "settings": {k: v for k, v in SETTINGS.items() if v is not None},
              "source": "benchmarks/bench_lpft.py"}
    if head_score is None or trainer.val_split is None:
        record.update(kept="head", reason="no validation split to choose on")
        return record
    features = trainer.cached.train_features
    # one backbone forward, as the extraction timed it (unknown: 20 images/s, a 2-core CPU's order at 224 px)
    per_image = features.seconds / max(len(features), 1) if features.seconds > 0 else 0.05
    splits = dataset.splits
    test = len(splits["test"]) if "test" in splits else 0
    reserve = test * per_image + 0.05 * cfg.train.time_budget  # the test pass, figures and report
    estimate = per_image * (STEP_PER_FORWARD * len(splits["train"]) + len(splits["val"]))
    left = cfg.train.time_budget - (time.perf_counter() - started) - reserve
    epochs = lpft_epochs(left, estimate)
    record.update(estimated_epoch_seconds=round(estimate, 2), seconds_left=round(left, 2))
    if epochs < 1:
        record.update(kept="head", reason=f"the budget leaves {max(left, 0):.0f}s, a fine-tuning epoch needs about "
                                          f"{estimate:.0f}s")
        console.print(f"LP-FT: skipped ({record['reason']}); the logistic-regression head stays")
        return record

    ft_cfg = copy.deepcopy(cfg)
    for key, value in SETTINGS.items():
        set_value(ft_cfg, key, value, "LP-FT")
    ft_cfg.train.epochs = epochs
    ft_cfg.train.warmup_epochs = round(0.1 * epochs, 3)  # bench_lpft.py: 10 % warm-up, then cosine
    # the extraction's precision (forward passes of this backbone, measured there): no second probe
    choice = measure.Choice(features.precision, features.channels_last, source="forced", device=trainer.choice.device)
    ft = Trainer(ft_cfg, trainer.run_dir, dataset, console, task=task, choice=choice)
    ft.model.load_state_dict(trainer.model.state_dict())  # start from the fitted head (LP), then FT
    scores, best_state, best_score = [], None, head_score
    epoch = 0
    while epoch < ft_cfg.train.epochs:
        start = time.perf_counter()
        ft.train_epoch(epoch, None)
        val = ft.evaluate_batches(ft.val_batches)
        if ft.scheduler is not None and not ft.step_per_batch:
            ft.scheduler.step()
        seconds = time.perf_counter() - start
        scores.append(round(float(val[metric]), 6))
        console.print(f"LP-FT epoch {epoch + 1}/{ft_cfg.train.epochs}  val_{metric} {val[metric]:.4f}  "
                      f"(the head: {head_score:.4f})  {seconds:.1f}s")
        if val[metric] > best_score:
            best_score = float(val[metric])
            best_state = {k: v.detach().clone() for k, v in ft.model.state_dict().items()}
        epoch += 1
        left = cfg.train.time_budget - (time.perf_counter() - started) - reserve
        if epoch == 1:  # the real epoch time replaces the estimate
            total = lpft_epochs(left, seconds, done=1)
            if total != ft_cfg.train.epochs and total > epoch:
                ft_cfg.train.epochs = total
                ft_cfg.train.warmup_epochs = min(ft_cfg.train.warmup_epochs, 0.1 * total)
                refit_schedule(ft, epoch * ft.steps_per_epoch)
            ft_cfg.train.epochs = max(total, epoch)
        elif left < seconds:
            break
    record.update(epochs=epoch, val=scores)
    if best_state is not None:
        trainer.model.load_state_dict(best_state)
        record.update(kept="lpft", reason=f"fine-tuned val_{metric} {best_score:.4f} > the head's {head_score:.4f}")
    else:
        record.update(kept="head", reason=f"no fine-tuned epoch beat the head's val_{metric} {head_score:.4f}")
    console.print(f"LP-FT: kept the {'fine-tuned model' if best_state is not None else 'logistic-regression head'}: "
                  f"{record['reason']}")
    return record
