"""Cached feature extraction: run a frozen backbone once, then train only the head on its features.

Seed 002's "fast feature extraction without augmentation": with the backbone frozen
and no augmentation, every epoch would recompute the same features, so compute them
once (uint8 batches -> the model's preprocessing -> ``forward_features`` -> pooling /
``forward_head(pre_logits=True)``) and train the head on the stored vectors. An epoch
then costs a few matrix products instead of a backbone forward pass per image.

Extraction runs under ``torch.inference_mode``. Under ``precision="auto"`` the first
batch times the backbone's forward pass in fp32 and bf16, channels_last and contiguous
(:mod:`vislab.core.measure`, cached), and keeps the fastest (bf16 must win by 10 %);
bf16 is then used only *if* the first batch's bf16 features agree with fp32 ones (cosine
similarity); otherwise it falls back to fp32 and says so.

Example:
    >>> from vislab.models import create_model
    >>> from vislab.models.finetune import freeze
    >>> model = freeze(create_model("efficientnet_lite0", 10, pretrained=True))    # doctest: +SKIP
    >>> pre = Preprocessing.from_timm(model)                                      # doctest: +SKIP
    >>> train = extract_features(model, pre, dataset.splits["train"])             # doctest: +SKIP
    >>> history = fit_head(cached_head(model), train, epochs=30, lr=1e-3)         # doctest: +SKIP
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from vislab.data.loaders import batch_count, drop_short_batch, make_batches
from vislab.data.preprocess import Preprocessing
from vislab.tasks.classification import classification_loss, correct_count

#: bf16 features must point the same way as fp32 ones: on average over the check batch,
#: and for its worst image (measured on EfficientNet-Lite0 / Fashion-MNIST: mean 0.997, worst 0.99)
BF16_MEAN_COSINE = 0.99
BF16_MIN_COSINE = 0.95
#: L-BFGS iterations per "epoch" of a full-batch logistic-regression head (``--optimizer lbfgs``)
LBFGS_ITERATIONS_PER_EPOCH = 100
#: An L-BFGS epoch that used every iteration is still "improving" (worth another epoch, and said so) only when its
#: objective fell by more than this fraction over its last LBFGS_TAIL_ITERATIONS iterations; a smaller fall is
#: the optimum for practical purposes (a further epoch changed the loss in the 4th digit and lowered test accuracy).
LBFGS_MATERIAL_FALL = 1e-3
LBFGS_TAIL_ITERATIONS = 10


@dataclass
class FeatureSet:
    """Backbone outputs for a data split, kept in memory (float32 on the CPU).

    Attributes:
        features: (N, ...) float32, what the head reads.
        labels: (N,) int64.
        precision: ``fp32`` or ``bf16``, how they were computed.
        seconds: time the extraction took.
    """

    features: torch.Tensor
    labels: torch.Tensor
    precision: str = "fp32"
    seconds: float = 0.0
    channels_last: bool = True  # the memory format the backbone ran in (measured under precision auto)

    def __len__(self) -> int:
        return len(self.labels)

    def save(self, path: str | Path) -> Path:
        """Write to a safetensors file (no pickle), e.g. to reuse across runs."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"features": self.features.contiguous(), "labels": self.labels.contiguous()}, str(path),
                  metadata={"precision": self.precision, "seconds": f"{self.seconds:.3f}"})
        return path

    @classmethod
    def load(cls, path: str | Path) -> "FeatureSet":
        from safetensors import safe_open

        from vislab.core.files import reading

        with reading(path, "a cached feature set (safetensors)", "delete it; it is made again"):
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
                return cls(handle.get_tensor("features"), handle.get_tensor("labels"),
                           meta.get("precision", "fp32"), float(meta.get("seconds", 0.0)))


def running_sums(device) -> tuple[torch.Tensor, torch.Tensor]:
    """A loss sum (float64) and a correct count (int64) that stay on ``device`` until read once:
    a read per step would stall a GPU's queue."""
    return (torch.zeros((), dtype=torch.float64, device=device), torch.zeros((), dtype=torch.int64, device=device))


def _is_feature_head_net(model: nn.Module) -> bool:
    from vislab.models.classic import FeatureHeadNet

    return isinstance(model, FeatureHeadNet)


def feature_function(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """What the head reads: ``forward_head(forward_features(x), pre_logits=True)`` (pooled
    features) for timm / Hugging Face models; ``forward_features`` for vislab's own networks,
    whose whole ``head`` (flatten + dense layers) is what trains."""
    if _is_feature_head_net(model):
        return model.forward_features
    return lambda x: model.forward_head(model.forward_features(x), pre_logits=True)


def cached_head(model: nn.Module) -> nn.Module:
    """The module that maps :func:`feature_function`'s output to logits (it is trained in place).

    Example:
        >>> import timm
        >>> cached_head(timm.create_model("resnet18", num_classes=3))
        Linear(in_features=512, out_features=3, bias=True)
    """
    if _is_feature_head_net(model):
        return model.head
    from vislab.models.finetune import head_modules

    return head_modules(model)[0][1]


def _batches(data, preprocessing: Preprocessing, batch_size: int, workers: int):
    """(uint8 images, labels) batches from a Split, a uint8 tensor, or (images, labels)."""
    if isinstance(data, torch.Tensor):
        data = (data, torch.full((len(data),), -1, dtype=torch.int64))
    if isinstance(data, tuple):
        images, labels = data
        for start in range(0, len(images), batch_size):
            yield images[start:start + batch_size], labels[start:start + batch_size]
        return
    yield from make_batches(data, preprocessing, batch_size, workers=workers)


def bf16_agrees(model: nn.Module, x: torch.Tensor, fn=None) -> tuple[bool, float, float]:
    """Whether bf16 autocast gives the same features as fp32 on batch ``x``: (ok, mean cosine, lowest cosine)."""
    fn = fn or feature_function(model)
    with torch.inference_mode():
        exact = fn(x).float().flatten(1)
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            fast = fn(x).float().flatten(1)
    cosine = F.cosine_similarity(exact, fast, dim=1, eps=1e-6)
    mean, worst = float(cosine.mean()), float(cosine.min())
    return mean >= BF16_MEAN_COSINE and worst >= BF16_MIN_COSINE, mean, worst


def measure_extraction(model: nn.Module, fn, x: torch.Tensor, device: torch.device, images: int | None = None):
    """The fastest of fp32/bf16 x memory formats for ``fn`` on batches shaped like ``x``: the
    inference probe (:func:`vislab.core.measure.measure_forward`), cached. ``images``: how many images
    the job extracts; one too short for the probe to pay runs in fp32, or in a choice measured before."""
    from vislab.core import measure

    def forward(moved, dtype):
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype is not None):
            return fn(moved)

    # fp16 is no extraction candidate (features are checked against fp32 for bf16 only)
    options = [c for c in measure.candidates(device, measure.has_convolutions(model)) if c.precision != "fp16"]
    return measure.measure_forward(model, x, device, forward, "features", options=options, images=images)


def extract_features(model: nn.Module, preprocessing: Preprocessing, data, batch_size: int = 64,
                     precision: str = "auto", channels_last: bool = True, workers: int = 0,
                     device: str | torch.device | None = None, progress: Callable | None = None,
                     job_images: int | None = None) -> FeatureSet:
    """Run the (frozen) backbone once over ``data`` and keep what the head reads.

    Args:
        model: the model; only its backbone runs (in eval mode, restored afterwards).
        preprocessing: the model's :class:`Preprocessing` (uint8 in, normalised float out).
        data: a ``vislab.data.sources.Split``, a uint8 (N, C, H, W) tensor, or a tuple
            ``(uint8 images, labels)``.
        batch_size: images per forward pass.
        precision: ``auto`` (the fastest of fp32/bf16 x memory formats, timed on the first
            batch; bf16 only if that batch's features agree with fp32), ``bf16`` or ``fp32``.
        channels_last: the memory format under ``bf16``/``fp32`` (``auto`` times both).
        workers: DataLoader workers for file-based splits.
        device: where to run (default: the model's device).
        progress: called as ``progress(done, total)`` after each batch.
        job_images: the images of the whole job this extraction is part of (default: ``data``'s), for
            ``precision="auto"``: a job too short for the timing to pay for itself
            (:func:`vislab.core.measure.probe_pays`) extracts in fp32, or in a choice measured before.

    Returns:
        A :class:`FeatureSet` with float32 CPU features.

    Example:
        >>> import timm, torch
        >>> model = timm.create_model("resnet18", num_classes=3)
        >>> pre = Preprocessing((3, 32, 32), (0.5,), (0.5,))
        >>> cached = extract_features(model, pre, torch.zeros(4, 3, 32, 32, dtype=torch.uint8), precision="fp32")
        >>> tuple(cached.features.shape)
        (4, 512)
    """
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision {precision!r} is not one of auto, bf16, fp32")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    fn = feature_function(model)
    use_bf16 = precision == "bf16"
    checked = precision != "auto"
    total = len(data[0]) if isinstance(data, tuple) else len(data)
    features, labels, done = [], [], 0
    start = time.perf_counter()
    try:
        for images, batch_labels in _batches(data, preprocessing, batch_size, workers):
            with torch.inference_mode():
                x = preprocessing(images.to(device)).contiguous(memory_format=memory_format)
            if not checked:
                checked = True
                choice = measure_extraction(model, fn, x, device, images=job_images or total)
                use_bf16 = choice.precision == "bf16"
                memory_format = choice.memory_format
                with torch.inference_mode(False):
                    model.to(memory_format=memory_format)
                x = x.contiguous(memory_format=memory_format)
                ok, mean, worst = bf16_agrees(model, x, fn) if use_bf16 else (True, 1.0, 1.0)
                if not ok:
                    use_bf16 = False
                    warnings.warn(
                        f"bf16 features differ from fp32 (cosine similarity mean {mean:.4f}, worst {worst:.4f}; "
                        f"needs {BF16_MEAN_COSINE} and {BF16_MIN_COSINE}); extracting in fp32", stacklevel=2,
                    )
            with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                out = fn(x)
            features.append(out.float().cpu())
            labels.append(batch_labels.cpu())
            done += len(images)
            if progress is not None:
                progress(done, total)
    finally:
        model.train(was_training)
    if not features:
        raise ValueError("no images to extract features from")
    return FeatureSet(torch.cat(features), torch.cat(labels).long(), "bf16" if use_bf16 else "fp32",
                      time.perf_counter() - start, memory_format == torch.channels_last)


def fit_head(head: nn.Module, train: FeatureSet, val: FeatureSet | None = None, epochs: int = 30,
             lr: float = 1e-3, batch_size: int = 64, weight_decay: float = 0.0, optimizer: str = "adam",
             label_smoothing: float = 0.0, seed: int = 0, on_epoch: Callable[[dict], None] | None = None) -> list[dict]:
    """Train ``head`` (in place) on cached features.

    Args:
        head: the classifier module (:func:`cached_head`).
        train: training features.
        val: validation features, evaluated after every epoch.
        epochs: passes over ``train``.
        lr: learning rate.
        batch_size: vectors per step.
        weight_decay: L2 / decoupled decay (adamw).
        optimizer: ``adam``, ``adamw`` or ``sgd`` (momentum 0.9).
        label_smoothing: cross-entropy label smoothing.
        seed: shuffling seed (the run is reproducible).
        on_epoch: called with each history row as it is made.

    Returns:
        History rows with the columns of ``history.csv``: epoch, train_loss, train_acc,
        val_loss, val_acc, lr, seconds.

    Example:
        >>> head = torch.nn.Linear(8, 2)
        >>> data = FeatureSet(torch.randn(32, 8), torch.randint(0, 2, (32,)))
        >>> len(fit_head(head, data, epochs=2))
        2
    """

    from vislab.train.optim import build_optimizer

    opt = build_optimizer([p for p in head.parameters() if p.requires_grad], optimizer, lr, weight_decay)
    device = next(head.parameters()).device
    x_all, y_all = train.features.to(device), train.labels.to(device)
    generator = torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(epochs):
        start = time.perf_counter()
        head.train()
        order = torch.randperm(len(y_all), generator=generator).to(device)
        row = {"epoch": epoch + 1, **head_epoch(head, opt, x_all, y_all, order, batch_size, label_smoothing),
               "val_loss": None, "val_acc": None, "lr": opt.param_groups[0]["lr"]}
        if val is not None and len(val):
            metrics = evaluate_head(head, val)
            row.update(val_loss=metrics["loss"], val_acc=metrics["acc"])
        row["seconds"] = round(time.perf_counter() - start, 4)
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
    head.eval()
    return history


def head_epoch(head: nn.Module, optimizer, features: torch.Tensor, labels: torch.Tensor, order: torch.Tensor,
               batch_size: int, label_smoothing: float = 0.0, after_step: Callable[[], None] | None = None) -> dict:
    """One pass of a head over cached features in ``order``: ``{train_loss, train_acc}``.

    The one minibatch loop of both :func:`fit_head` and :class:`CachedTraining`; the sums stay on
    the head's device until the end (one read per epoch).
    """
    device = next(head.parameters()).device
    total_loss, correct = running_sums(device)
    for index in order.split(batch_size):
        x, y = features[index].to(device), labels[index].to(device)
        logits = head(x)
        loss = classification_loss(logits, y, label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step()
        total_loss += loss.detach().double() * len(y)
        correct += correct_count(logits.detach(), y)
    return {"train_loss": float(total_loss) / len(order), "train_acc": int(correct) / len(order)}


def _lbfgs_epoch(head: nn.Module, optimizer: torch.optim.LBFGS, data: FeatureSet, device, label_smoothing: float,
                 l2: float) -> tuple[dict, float]:
    """One epoch of full-batch L-BFGS: ``({train_loss, train_acc}, fall)``, where ``fall`` is the relative fall of
    the objective over the epoch's last :data:`LBFGS_TAIL_ITERATIONS` iterations."""
    x, y = data.features.to(device), data.labels.to(device)
    weights = [p for p in head.parameters() if p.requires_grad and p.ndim > 1]
    state = optimizer.state[optimizer.param_groups[0]["params"][0]]
    trace = []  # (iteration, objective) of every evaluation, line-search trials included

    def closure():
        optimizer.zero_grad(set_to_none=True)
        loss = classification_loss(head(x), y, label_smoothing)
        loss = loss + 0.5 * l2 * sum((w * w).sum() for w in weights)
        loss.backward()
        trace.append((state.get("n_iter", 0), float(loss.detach())))
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        logits = head(x)
        loss = classification_loss(logits, y, label_smoothing)
    logs = {"train_loss": float(loss), "train_acc": int(correct_count(logits, y)) / max(len(y), 1)}
    # the objective as it was LBFGS_TAIL_ITERATIONS iterations before the end (the best point then) and at the end
    last = trace[-1][0]
    then = min((value for at, value in trace if at <= last - LBFGS_TAIL_ITERATIONS), default=trace[0][1])
    now = min(value for _, value in trace)
    return logs, (then - now) / max(abs(then), 1e-12)


@torch.inference_mode()
def evaluate_head(head: nn.Module, data: FeatureSet, batch_size: int = 1024) -> dict:
    """Loss and accuracy of ``head`` on cached features."""

    was_training = head.training
    head.eval()
    device = next(head.parameters()).device
    total_loss, correct = running_sums(device)
    for start in range(0, len(data), batch_size):
        x = data.features[start:start + batch_size].to(device)
        y = data.labels[start:start + batch_size].to(device)
        logits = head(x)
        total_loss += classification_loss(logits, y, reduction="sum").detach().double()
        correct += correct_count(logits, y)
    head.train(was_training)
    n = max(len(data), 1)
    return {"loss": float(total_loss) / n, "acc": int(correct) / n}


def logistic_regression_head(head: nn.Linear, train: FeatureSet, c: float = 1.0, max_iter: int = 1000) -> nn.Linear:
    """Fit a Linear head as multinomial logistic regression (scikit-learn, L-BFGS) on cached features.

    The reference numbers for frozen features (docs/benchmarks.md) use this head; it needs no
    learning-rate or epoch choice. Features are used as they are (no scaling), so the
    fitted head works on the model's own features afterwards.

    Example:
        >>> head = torch.nn.Linear(8, 3)
        >>> data = FeatureSet(torch.randn(60, 8), torch.arange(60) % 3)
        >>> _ = logistic_regression_head(head, data)
    """
    from sklearn.linear_model import LogisticRegression

    if not isinstance(head, nn.Linear):
        raise ValueError("logistic_regression_head fits a Linear head only (use --head linear)")
    classes = torch.unique(train.labels)
    wanted = 2 if head.out_features == 1 else head.out_features
    if len(classes) != wanted or int(classes.max()) != wanted - 1:
        raise ValueError(
            f"the training features hold {len(classes)} classes but the head has {head.out_features} outputs; "
            "every class needs examples"
        )
    model = LogisticRegression(C=c, max_iter=max_iter)
    model.fit(train.features.flatten(1).numpy(), train.labels.numpy())
    coef = torch.as_tensor(model.coef_, dtype=head.weight.dtype)
    intercept = torch.as_tensor(model.intercept_, dtype=head.bias.dtype)
    if len(classes) == 2 and head.out_features == 2:  # sklearn gives one logit: class 0 gets zeros
        coef = torch.cat([torch.zeros_like(coef), coef])
        intercept = torch.cat([torch.zeros_like(intercept), intercept])
    with torch.no_grad():
        head.weight.copy_(coef)
        head.bias.copy_(intercept)
    return head


class CachedTraining:
    """Epoch-by-epoch head training on cached features, for a fit loop that owns the optimiser.

    The loop keeps its optimiser, scheduler, history, checkpoints and early stopping;
    only the work of an epoch changes: features are extracted once (on first use), and
    each epoch runs the head over shuffled feature batches. Augmentation cannot apply
    to cached features (seed 002's "without augmentation"), so the loop should say so.

    Args:
        model: the model with a frozen backbone (``freeze(model, "backbone")``).
        preprocessing: the model's preprocessing.
        train, val: data splits (``val`` may be None).
        batch_size: feature vectors per optimiser step.
        precision: extraction precision (``auto`` checks bf16 against fp32).
        workers: DataLoader workers for file-based splits.

    Example:
        >>> cached = CachedTraining(model, pre, splits["train"], splits.get("val"), 128)   # doctest: +SKIP
        >>> for epoch in range(epochs):                                                 # doctest: +SKIP
        ...     logs = cached.train_epoch(optimizer, seed, epoch, after_step=scheduler_step)
        ...     logs.update(cached.evaluate())
    """

    def __init__(self, model: nn.Module, preprocessing: Preprocessing, train, val=None, batch_size: int = 128,
                 precision: str = "auto", workers: int = 0, extract_batch_size: int = 64, drop_last: bool = False):
        self.model, self.preprocessing = model, preprocessing
        self.drop_last = drop_last  # --drop-last: each epoch leaves its short last batch out
        self.train_data, self.val_data = train, val
        self.batch_size, self.precision, self.workers = batch_size, precision, workers
        self.extract_batch_size = extract_batch_size
        self.head = cached_head(model)
        self.train_features: FeatureSet | None = None
        self.val_features: FeatureSet | None = None
        # L-BFGS stopped short of its iteration budget (gradient/step below tolerance): another epoch
        # would start from the optimum and change nothing, so the loop stops
        self.converged = False
        # the last L-BFGS epoch's objective still fell materially at its end (LBFGS_MATERIAL_FALL); False until
        # this process ran one
        self.still_improving = False

    def prepare(self) -> float:
        """Extract the features (once); returns the seconds it took."""
        seconds = 0.0
        # one job: a precision probe pays for itself (or not) over the training and validation images together
        job = len(self.train_data) + (len(self.val_data) if self.val_data is not None else 0)
        if self.train_features is None:
            self.train_features = extract_features(self.model, self.preprocessing, self.train_data,
                                                   self.extract_batch_size, self.precision, workers=self.workers,
                                                   job_images=job)
            seconds += self.train_features.seconds
        if self.val_data is not None and self.val_features is None:
            self.val_features = extract_features(self.model, self.preprocessing, self.val_data,
                                                 self.extract_batch_size, self.precision, workers=self.workers,
                                                 job_images=job)
            seconds += self.val_features.seconds
        return seconds

    def train_epoch(self, optimizer: torch.optim.Optimizer, seed: int, epoch: int, label_smoothing: float = 0.0,
                    after_step: Callable[[], None] | None = None, weight_decay: float = 0.0) -> dict:
        """One pass of the head over the shuffled training features: ``{train_loss, train_acc}``.

        With a ``torch.optim.LBFGS`` optimiser the epoch is instead up to
        ``LBFGS_ITERATIONS_PER_EPOCH`` full-batch L-BFGS iterations on the mean
        cross-entropy plus ``weight_decay / 2 * ||W||^2`` (weights, not biases): multinomial
        logistic regression. ``weight_decay=0`` means ``1 / N``, scikit-learn's default C=1.
        """

        self.prepare()
        data = self.train_features
        device = next(self.head.parameters()).device
        self.head.train()
        if isinstance(optimizer, torch.optim.LBFGS):
            state = optimizer.state[optimizer.param_groups[0]["params"][0]]
            before = state.get("n_iter", 0)
            logs, fall = _lbfgs_epoch(self.head, optimizer, data, device, label_smoothing,
                                      weight_decay if weight_decay > 0 else 1.0 / len(data))
            self.still_improving = fall > LBFGS_MATERIAL_FALL
            self.converged = state.get("n_iter", 0) - before < optimizer.param_groups[0]["max_iter"]
            return logs
        return head_epoch(self.head, optimizer, data.features, data.labels, self.epoch_order(seed, epoch),
                          self.batch_size, label_smoothing, after_step)

    def epoch_order(self, seed: int, epoch: int) -> torch.Tensor:
        """The training features' order in epoch ``epoch`` (seeded), cut to whole steps: what
        :meth:`train_epoch` and lr-find's sweep of the head batch in turn."""
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch * 7_919 + 11)
        return torch.randperm(len(self.train_features), generator=generator)[:self.steps_per_epoch() * self.batch_size]

    @property
    def head_name(self) -> str:
        """The head in words: a Linear head is a logistic regression."""
        return "logistic-regression head" if isinstance(self.head, nn.Linear) else "head"

    def not_converged(self, run_dir, epochs: int) -> str | None:
        """One line when the run's last L-BFGS epoch used every iteration it allows without converging and its
        objective still fell materially at its end (:data:`LBFGS_MATERIAL_FALL` over its last
        :data:`LBFGS_TAIL_ITERATIONS` iterations: its ``epochs`` epochs ended the fit short of the optimum), saying
        how to train on; None otherwise (a flat objective at the iteration limit is the optimum for practical
        purposes)."""
        if self.converged or not self.still_improving:
            return None
        return (f"lbfgs: the {self.head_name} has not converged: epoch {epochs} used all {LBFGS_ITERATIONS_PER_EPOCH} L-BFGS "
                f"iterations an epoch allows; train on with `vislab train --resume {run_dir} --epochs {epochs + 1}` "
                "(or more), or start again with more --epochs")

    def steps_per_epoch(self) -> int:
        """Optimiser steps of an epoch (the short last batch as :func:`~vislab.data.loaders.drop_short_batch` says)."""
        images = len(self.train_data)
        return batch_count(images, self.batch_size, drop_short_batch(images, self.batch_size, self.drop_last))

    def evaluate(self) -> dict:
        """``{val_loss, val_acc}`` on the cached validation features (empty without a val split)."""
        self.prepare()
        if self.val_features is None:
            return {}
        metrics = evaluate_head(self.head, self.val_features)
        return {"val_loss": metrics["loss"], "val_acc": metrics["acc"]}
