"""Semantic segmentation: one class per pixel (``--task segmentation``).

Outputs are (N, K, H, W) logits; targets are (N, H, W) class-ID masks in which
``ignore_index`` (default 255) marks void pixels, which never count in the loss or
the metrics. Loss: cross-entropy with the ignore index and optional class weights
(``--class-weights auto``: median-frequency balancing from the training pixels, as
in SegNet), Dice (segmentation_models_pytorch's ``DiceLoss``), or their sum.

Metrics come from one confusion matrix accumulated over the whole split (rows: true
class, columns: predicted), never from per-batch averages:
    IoU_c = TP_c / (TP_c + FP_c + FN_c), at the data-set level;
    mIoU  = the mean of IoU_c over the classes present in the truth or the prediction:
            a class absent from both is left out of the mean (counted neither 0 nor 1);
    pixel accuracy = sum TP / valid pixels; per-class accuracy = TP_c / true pixels of c;
    frequency-weighted IoU = sum_c (true pixels of c / valid pixels) * IoU_c.
``miou`` is the headline (top level in metrics.json; ``val_miou`` is maximised by early stopping).

Example:
    >>> import numpy as np
    >>> cm = np.array([[3, 1, 0], [0, 2, 0], [0, 0, 0]])   # class 2 absent from truth and prediction
    >>> m = segmentation_metrics(cm, ["a", "b", "c"])
    >>> round(m["miou"], 4), m["per_class"][2]["iou"]     # (3/4 + 2/3) / 2
    (0.7083, None)
"""

from __future__ import annotations

import csv
import heapq
import html
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vislab.core.errors import ConfigError
from vislab.core.files import read_json
from vislab.tasks.base import Evaluator, Metric, Task, register_task

MIOU_AVERAGING = ("mean over classes of data-set-level IoU (TP / (TP + FP + FN) from one confusion matrix over "
                  "the whole split); classes absent from both truth and prediction are excluded; ignore-index "
                  "pixels never count")


# --------------------------------------------------------------------------- scores
def confusion_matrix(predicted: torch.Tensor, targets: torch.Tensor, num_classes: int,
                     ignore_index: int = 255) -> torch.Tensor:
    """(K, K) int64 pixel counts, rows true and columns predicted, on the inputs' device.

    Pixels whose target is ``ignore_index`` (or outside 0..K-1) are not counted.

    Example:
        >>> t = torch.tensor([[0, 1, 255]]); p = torch.tensor([[0, 0, 1]])
        >>> confusion_matrix(p, t, 2).tolist()
        [[1, 0], [1, 0]]
    """
    targets = targets.long()
    valid = (targets >= 0) & (targets < num_classes) & (targets != ignore_index)
    index = targets[valid] * num_classes + predicted.long()[valid]
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def segmentation_metrics(matrix, class_names: Sequence[str]) -> dict:
    """Pixel accuracy, per-class IoU and accuracy, mIoU and frequency-weighted IoU from a confusion matrix."""
    cm = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(cm)
    truth, predicted = cm.sum(1), cm.sum(0)
    union = truth + predicted - tp
    total = cm.sum()
    present = union > 0
    iou = np.divide(tp, union, out=np.zeros_like(tp), where=present)
    accuracy = np.divide(tp, truth, out=np.zeros_like(tp), where=truth > 0)
    per_class = [{"class": str(name), "iou": float(iou[c]) if present[c] else None,
                  "accuracy": float(accuracy[c]) if truth[c] > 0 else None,
                  "true_pixels": int(truth[c]), "predicted_pixels": int(predicted[c])}
                 for c, name in enumerate(class_names)]
    miou = float(iou[present].mean()) if present.any() else None
    return {
        "miou": miou,
        "pixel_accuracy": float(tp.sum() / total) if total else None,
        "mean_class_accuracy": float(accuracy[truth > 0].mean()) if (truth > 0).any() else None,
        "fw_iou": float((truth[present] / total * iou[present]).sum()) if total else None,
        "miou_averaging": MIOU_AVERAGING,
        "classes_in_mean": int(present.sum()),
        "per_class": per_class,
        "valid_pixels": int(total),
        "curves": {"confusion_matrix": cm.astype(np.int64).tolist()},
    }


def median_frequency_weights(pixel_counts: np.ndarray) -> np.ndarray:
    """SegNet's class weights: median(freq) / freq_c over present classes; absent classes get 0."""
    counts = np.asarray(pixel_counts, dtype=np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    if present.any():
        freq = counts / counts[present].sum()
        weights[present] = np.median(freq[present]) / freq[present]
    return weights


class RegionScore:
    """The score Grad-CAM explains for a segmentation: class ``category``'s logits summed over ``mask`` (a 0/1
    (H, W) array), on one output (K, H, W), as pytorch-grad-cam's ``SemanticSegmentationTarget``.

    Example:
        >>> score = RegionScore(1, np.array([[1.0, 0.0]], np.float32))
        >>> float(score(torch.tensor([[[5.0, 5.0]], [[2.0, 3.0]]])))
        2.0
    """

    def __init__(self, category: int, mask: np.ndarray):
        self.category = category
        self.mask = torch.from_numpy(mask)

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        return (model_output[self.category, :, :] * self.mask.to(model_output.device)).sum()


def _to_size(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-pixel outputs at the targets' size (bilinear), as the labels are never resized but by nearest."""
    if outputs.shape[-2:] != targets.shape[-2:]:
        outputs = F.interpolate(outputs, size=targets.shape[-2:], mode="bilinear", align_corners=False)
    return outputs


# --------------------------------------------------------------------------- evaluation
class SegmentationEvaluator(Evaluator):
    """Streams a split into one confusion matrix; keeps per-image scores and a few masks for the figures."""

    def __init__(self, class_names: Sequence[str], ignore_index: int = 255, keep: int = 8):
        self.class_names = list(class_names)
        self.k = len(self.class_names)
        self.ignore_index = ignore_index
        self.keep = keep
        self.matrix = np.zeros((self.k, self.k), dtype=np.int64)
        self.loss_sum, self.count = 0.0, 0
        self.sources: list[str] = []
        self.image_iou: list[float] = []
        self.image_accuracy: list[float] = []
        self.samples: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # the first `keep` images: (true, predicted)
        self._worst: list = []  # heap of (-iou, index, true, predicted): the `keep` lowest IoUs

    def update(self, outputs, targets, sources) -> None:
        probs = _to_size(outputs.float(), targets)
        targets = torch.as_tensor(targets).long().to(probs.device)
        predicted = probs.argmax(1)
        valid = (targets >= 0) & (targets < self.k) & (targets != self.ignore_index)
        picked = probs.gather(1, targets.clamp(0, self.k - 1).unsqueeze(1))[:, 0].clamp_min(1e-12)
        nll = -(picked.log() * valid).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp_min(1)
        self.loss_sum += float(nll.sum())
        for i in range(len(targets)):
            index = self.count + i
            cm = confusion_matrix(predicted[i], targets[i], self.k, self.ignore_index).cpu().numpy()
            self.matrix += cm
            union = cm.sum(0) + cm.sum(1) - np.diag(cm)
            iou = float((np.diag(cm)[union > 0] / union[union > 0]).mean()) if (union > 0).any() else 1.0
            self.image_iou.append(iou)
            self.image_accuracy.append(float(np.diag(cm).sum() / max(cm.sum(), 1)))
            true_np = targets[i].cpu().numpy().astype(np.int64)
            pred_np = predicted[i].cpu().numpy().astype(np.int64)
            if index < self.keep:
                self.samples[index] = (true_np, pred_np)
            entry = (-iou, -index, true_np, pred_np)
            if len(self._worst) < self.keep:
                heapq.heappush(self._worst, entry)
            elif entry[:2] > self._worst[0][:2]:
                heapq.heapreplace(self._worst, entry)
        self.sources += list(sources)
        self.count += len(targets)

    @property
    def worst(self) -> list[tuple[int, float, np.ndarray, np.ndarray]]:
        """(index, IoU, true, predicted) of the lowest-IoU images, worst first."""
        return [(-i, -n, t, p) for n, i, t, p in sorted(self._worst, key=lambda e: (-e[0], -e[1]))]

    def result(self) -> dict:
        metrics = {"task": "segmentation"}
        metrics.update(segmentation_metrics(self.matrix, self.class_names))
        metrics["loss"] = self.loss_sum / max(self.count, 1)
        metrics["num_samples"] = self.count
        return metrics

    def save(self, run_dir: Path, suffix: str = "") -> None:
        with open(Path(run_dir) / f"per_image_iou{suffix}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image", "iou", "pixel_accuracy"])
            for source, iou, acc in zip(self.sources, self.image_iou, self.image_accuracy):
                writer.writerow([source, f"{iou:.6f}", f"{acc:.6f}"])


# --------------------------------------------------------------------------- the task
@register_task
class Segmentation(Task):
    """Semantic segmentation (``--task segmentation``)."""

    name = "segmentation"
    headline = "miou"
    metrics = (Metric("miou", "max", "mIoU"), Metric("pixel_acc", "max", "pixel accuracy"))
    per_pixel = True

    def __init__(self, label_smoothing: float = 0.0, segmentation=None, ignore_index: int = 255, loss: str = "ce",
                 class_weights=None, palette=None, **options):
        super().__init__(**options)
        if segmentation is not None:  # a SegmentationConfig (training) wins over stored task options
            # --loss and --class-weights are training's flags (train.loss / train.class_weights), shared by
            # every task; the segmentation section's own keys, when set, come first
            train_loss = {"auto": "ce", None: "ce"}.get(loss, loss)
            ignore_index = segmentation.ignore_index
            loss = segmentation.loss if segmentation.loss != "ce" else train_loss
            class_weights = segmentation.class_weights or ("auto" if class_weights == "auto" else None)
            if loss not in ("ce", "dice", "ce+dice"):
                raise ConfigError(f"--loss {loss} is not a segmentation loss; use auto (cross-entropy with the "
                                  "ignore index), dice or ce+dice")
            if class_weights not in (None, "auto"):
                raise ConfigError(f"--class-weights {class_weights} does not apply to segmentation; use auto "
                                  "(median-frequency weights from the training masks)")
            self.palette_spec, self.classes_file = segmentation.palette, segmentation.classes
        else:
            self.palette_spec, self.classes_file = None, None
        self.segmentation_cfg = segmentation
        self.ignore_index = int(ignore_index)
        self.loss_name = loss
        self.class_weights = class_weights  # None, "auto" (resolved from the data) or a list of floats
        self.label_smoothing = label_smoothing
        self._weights_tensor = None
        self._dice = None
        self.palette = None
        if palette:  # stored in model.json's task_options
            from vislab.data.palettes import Palette

            self.palette = Palette.from_json(palette, "model")

    # ---- data and model
    def load_dataset(self, data_cfg, seed: int = 0, scoring: bool = False):
        from vislab.core.config import SegmentationConfig
        from vislab.data.masks import load_segmentation_dataset

        seg_cfg = self.segmentation_cfg or SegmentationConfig(ignore_index=self.ignore_index, loss=self.loss_name)
        dataset = load_segmentation_dataset(data_cfg, seg_cfg, seed=seed)
        self.palette = dataset.palette
        self._resolve_class_weights(dataset)
        return dataset

    def align_classes(self, dataset, class_names, source: str):
        """A mask's values are the classes' indices: data whose classes are the model's first ones (masks
        in which the last classes do not occur) takes the model's names, and so does data named by nothing but
        the IDs in its masks (no classes.txt, --classes or --palette) when each ID is one of the model's;
        any other difference is refused, naming the fix."""
        from vislab.core.errors import DataError

        names, have = list(class_names), list(dataset.class_names)
        if have == names[:len(have)]:
            dataset.class_names = names
            return dataset
        listed = ", ".join(map(str, names[:12])) + (", ..." if len(names) > 12 else "")
        if have == [str(i) for i in range(len(have))]:  # named by the IDs found in its masks
            if len(have) <= len(names):  # each ID is one of the model's classes, by index
                dataset.class_names = names
                return dataset
            raise DataError(f"{source}: its masks hold class IDs up to {len(have) - 1}, but the model knows "
                            f"{len(names)} classes (IDs 0..{len(names) - 1}); evaluate on masks of the model's "
                            f"classes, or add {source}/classes.txt with the run's classes in order, one a line "
                            f"({listed}): masks holding other IDs are then skipped")
        try:
            self._class_index(dataset, names, source)
        except DataError:  # names a class the model lacks: a mask's value is an index, so name the classes.txt
            unknown = [name for name in have if name not in names]
            raise DataError(f"{source}: {len(unknown)} of its classes are not the model's ({unknown[:5]}"
                            f"{'...' if len(unknown) > 5 else ''}); the model knows {len(names)}: {listed}. A "
                            f"mask's values are class indices: if its IDs mean the model's classes, make "
                            f"{source}/classes.txt the run's classes in order, one a line; otherwise evaluate on "
                            "masks labelled as in training") from None
        raise DataError(f"{source}: its classes {have[:8]}... are the model's in another order; a mask's values "
                        "must mean what they meant in training (give the training data's classes.txt)")

    def prepare(self, dataset, console=None) -> None:
        """A task built after the data was loaded (``--recipe auto`` rebuilds it with the loss and
        class weights it chose) takes the palette and the median-frequency weights from it here."""
        if self.palette is None:
            self.palette = getattr(dataset, "palette", None)
        self._resolve_class_weights(dataset)

    def _resolve_class_weights(self, dataset) -> None:
        """``class_weights="auto"``: median-frequency weights from the training masks' pixel counts."""
        from vislab.data.masks import pixel_counts

        if self.class_weights == "auto":
            counts = pixel_counts(dataset.splits["train"].labels, dataset.num_classes)
            self.class_weights = [round(float(w), 6) for w in median_frequency_weights(counts)]

    def audit(self, dataset, out_dir, seed: int = 0, figures: bool = True, max_images: int = 2000,
              near_duplicates: bool | None = None, label_issues: dict | None = None) -> dict:
        """The mask audit (pixels per class, images without foreground, ignored pixels, bad pairs);
        ``max_images`` and ``near_duplicates`` concern the image studies, which a mask audit does not run."""
        from vislab.data.masks import audit_masks

        return audit_masks(dataset, out_dir, self.ignore_index, figures=figures, task=self.name)

    def model_config(self, model_cfg, native_size):
        import dataclasses

        if model_cfg.input_size or not native_size:
            return model_cfg
        return dataclasses.replace(model_cfg, input_size=list(native_size))  # segment at the data's own size

    def model_extra(self, dataset, predict_split=None, console=None) -> dict:
        palette = getattr(dataset, "palette", None) or self.palette
        colours = palette.to_json() if palette is not None else None
        return {"task_options": {"ignore_index": self.ignore_index, "loss": self.loss_name,
                                 "class_weights": self.class_weights, "palette": colours},
                "palette": colours}

    def num_outputs(self, class_names):
        return len(class_names)

    def targets(self, labels):
        return labels.long()

    def stratify_key(self, labels):
        return None

    def balanced_weights(self, labels):
        raise ConfigError("--sampler balanced draws whole images by their class, and a segmentation image holds "
                          "many classes: drop --sampler and weigh the pixels with --class-weights auto "
                          "(median-frequency weights from the training masks)")

    def augment_pair(self, augment, images, targets, generator):
        from vislab.data.augment import augment_with_masks

        return augment_with_masks(augment, images, targets, generator, self.ignore_index)

    # ---- loss and running statistics
    def _weights(self, device):
        if not isinstance(self.class_weights, (list, tuple)):
            return None
        if self._weights_tensor is None or self._weights_tensor.device != device:
            self._weights_tensor = torch.tensor(self.class_weights, dtype=torch.float32, device=device)
        return self._weights_tensor

    def loss(self, outputs, targets, reduction="mean"):
        """The training loss (``reduction="mean"``: --loss with its class weights); summed for validation
        and test (``"sum"``), the plain pixel cross-entropy averaged per image and summed over the images: the
        loss `vislab evaluate` reports, comparable across runs whatever trained them (as the other tasks do)."""
        logits = _to_size(outputs.float(), targets)
        targets = targets.long()
        if reduction == "sum":
            ce = F.cross_entropy(logits, targets, ignore_index=self.ignore_index, reduction="none")
            valid = (targets != self.ignore_index).float()
            return (ce.flatten(1).sum(1) / valid.flatten(1).sum(1).clamp_min(1)).sum()
        total = logits.new_zeros(())
        if "ce" in self.loss_name.split("+"):
            weights = self._weights(logits.device)
            ce = F.cross_entropy(logits, targets, weight=weights, ignore_index=self.ignore_index, reduction="none")
            valid = (targets != self.ignore_index).float()
            if weights is not None:  # PyTorch's weighted mean: divide by the weights of the counted pixels
                valid = valid * weights[targets.clamp(0, len(weights) - 1)]
            per_image = ce.flatten(1).sum(1) / valid.flatten(1).sum(1).clamp_min(1e-12)
            total = per_image.mean()
        if "dice" in self.loss_name.split("+"):
            if self._dice is None:
                from segmentation_models_pytorch.losses import DiceLoss

                self._dice = DiceLoss(mode="multiclass", from_logits=True, ignore_index=self.ignore_index)
            total = total + self._dice(logits, targets)
        return total

    def batch_stats(self, outputs, targets):
        predicted = _to_size(outputs, targets).argmax(1)
        return {"confusion": confusion_matrix(predicted, targets, outputs.shape[1], self.ignore_index)}

    def epoch_metrics(self, sums, count):
        matrix = torch.as_tensor(sums["confusion"], dtype=torch.float64)
        k = int(round(matrix.numel() ** 0.5))
        matrix = matrix.reshape(k, k)
        tp = matrix.diagonal()
        union = matrix.sum(0) + matrix.sum(1) - tp
        present = union > 0
        miou = float((tp[present] / union[present]).mean()) if bool(present.any()) else 0.0
        return {"miou": miou, "pixel_acc": float(tp.sum() / matrix.sum().clamp_min(1))}

    # ---- predictions
    def postprocess(self, outputs):
        return outputs.float().softmax(1)

    def describe(self, output, class_names, top_k=5):
        predicted = output.argmax(0)
        counts = torch.bincount(predicted.flatten(), minlength=len(class_names))
        shares = counts.double() / max(predicted.numel(), 1)
        order = shares.argsort(descending=True)[:top_k]
        return {"pixel_shares": [{"class": class_names[int(c)], "index": int(c), "share": float(shares[c])}
                                 for c in order if counts[c] > 0]}

    def explain_target(self, outputs, target, class_names):
        """Grad-CAM for a class over its predicted region: :class:`RegionScore`, pytorch-grad-cam's
        ``SemanticSegmentationTarget`` (a test holds the two equal) without importing that package, which
        takes 1.5 s (OpenCV, ``torch._dynamo``) for a two-line score."""
        from vislab.tasks.classification import resolve_target

        logits = outputs[0] if outputs.dim() == 4 else outputs
        predicted = logits.argmax(0)
        if target is None or (isinstance(target, str) and target.lower() == "top"):
            counts = torch.bincount(predicted.flatten(), minlength=logits.shape[0])
            counts[0] = 0 if len(counts) > 1 and counts[1:].sum() > 0 else counts[0]  # prefer a foreground class
            index = int(counts.argmax())
        else:
            index = resolve_target(target, logits.flatten(1).mean(1)[None], class_names)
        region = (predicted == index).float().cpu().numpy()
        share = float(region.mean())
        scorer = RegionScore(index, region)

        def score(batch_outputs):
            # a batch (N, K, H, W) -> (N,) or one output (K, H, W) -> scalar, summed over the region
            if batch_outputs.dim() == 4:
                return torch.stack([scorer(o) for o in batch_outputs])
            return scorer(batch_outputs)

        return index, share, score

    def lime_scores(self, outputs, index):
        """Each class's mean probability over the region the image's own prediction gives class ``index``
        (the region Grad-CAM's target sums over), so LIME finds the superpixels that make that region
        ``index``; the whole image when no pixel is predicted as it."""
        logits = outputs[0] if outputs.dim() == 4 else outputs
        region = (logits.argmax(0) == index).float()
        if not region.any():
            region = torch.ones_like(region)

        def scores(batch_outputs):
            probabilities = self.postprocess(batch_outputs)
            return (probabilities * region.to(probabilities.device)).sum((-2, -1)) / region.sum()

        return scores

    # ---- evaluation, figures, report
    def evaluator(self, class_names):
        return SegmentationEvaluator(class_names, self.ignore_index)

    def write_figures(self, evaluator, metrics, class_names, images_for, run_dir, name=""):
        from vislab.viz.evaluation import plot_confusion_matrix
        from vislab.viz.masks import colorize, plot_class_iou, plot_mask_grid

        plots = Path(run_dir) / "plots" / name
        plots.mkdir(parents=True, exist_ok=True)
        written = [plot_confusion_matrix(evaluator.matrix, class_names, plots / "seg_confusion_matrix.png",
                                         normalize=True),
                   plot_class_iou(class_names, [row["iou"] for row in metrics["per_class"]],
                                  plots / "seg_class_iou.png", metrics.get("miou"))]
        palette = _palette_array(self.palette, len(class_names))

        def grid(entries, filename, title):
            if not entries:
                return
            images = images_for([index for index, *_ in entries])
            rows, titles = [], []
            for image, (index, iou, true, predicted) in zip(images, entries):
                errors = np.zeros((*true.shape, 3), np.uint8)
                wrong = (true != predicted) & (true != self.ignore_index)
                errors[wrong] = (220, 30, 30)
                errors[true == self.ignore_index] = (255, 255, 255)
                picture = image.numpy()
                if picture.shape[-2:] != true.shape:
                    picture = F.interpolate(image[None].float(), size=true.shape, mode="bilinear")[0].byte().numpy()
                rows.append([picture, colorize(true, palette, self.ignore_index), colorize(predicted, palette),
                             errors])
                source = evaluator.sources[index] if index < len(evaluator.sources) else str(index)
                titles.append(f"{Path(source).name[:18]}\nIoU {iou:.2f}")
            written.append(plot_mask_grid(rows, titles, plots / filename, title))

        samples = [(i, evaluator.image_iou[i], t, p) for i, (t, p) in sorted(evaluator.samples.items())]
        grid(samples, "seg_samples.png", "Sample images: input / true / predicted / errors (red)")
        grid(evaluator.worst, "seg_worst.png", "Lowest-IoU images: input / true / predicted / errors (red)")
        return written

    def summary_cards(self, metrics):
        def num(v):
            return "n/a" if v is None else f"{v:.4f}"

        return [("mIoU", num(metrics.get("miou"))), ("Pixel accuracy", num(metrics.get("pixel_accuracy"))),
                ("Frequency-weighted IoU", num(metrics.get("fw_iou"))),
                ("Mean class accuracy", num(metrics.get("mean_class_accuracy"))),
                ("Test images", str(metrics.get("num_samples", "n/a")))]

    def report_sections(self):
        return [("segmentation", "Segmentation evaluation", _segmentation_section)]

    def end_of_run_line(self, metrics):
        miou = metrics.get("miou")
        split = metrics.get("split", "test")
        return (f"{split} mIoU: {miou:.4f}" if miou is not None else f"{split} mIoU: n/a") + \
            f"  pixel accuracy: {metrics.get('pixel_accuracy') or 0:.4f}  {split} loss: {metrics.get('loss', 0):.4f}"


def _palette_array(palette, count: int) -> np.ndarray:
    from vislab.data.palettes import Palette

    if palette is None:
        palette = Palette.for_classes([str(i) for i in range(count)])
    return palette.array(count)


SEGMENTATION_FIGURES = ["seg_class_iou.png", "seg_confusion_matrix.png", "seg_samples.png", "seg_worst.png"]


def _segmentation_section(report) -> str:

    parts = []
    path = report.run_dir / "metrics.json"
    if path.is_file():
        metrics = read_json(path, "a metrics file (JSON)", "run `vislab evaluate` again")
        parts.append(f"<p>mIoU is the {html.escape(metrics.get('miou_averaging', MIOU_AVERAGING))}; "
                     f"{metrics.get('classes_in_mean', '?')} classes are in the mean.</p>")
        rows = [[r["class"], r["iou"], r["accuracy"], r["true_pixels"], r["predicted_pixels"]]
                for r in metrics.get("per_class", [])]
        if rows:
            parts.append(report.table(["class", "IoU", "accuracy", "true pixels", "predicted pixels"], rows))
    parts += [report.figure(report.plots / n) for n in SEGMENTATION_FIGURES if (report.plots / n).is_file()]
    return "\n".join(parts)
