"""An exported ONNX file run by onnxruntime, with the same preprocessing and outputs as a run folder.

:class:`OnnxPredictor` has the parts of :class:`vislab.infer.Predictor` that
:func:`vislab.infer.predict_files` and the server use (``outputs``, ``preprocessing``,
``task``, ``loaded.class_names``), so ``vislab predict model.onnx IMAGES`` prints the
same table/json/csv as for a run folder. Everything it needs is read from the file's own
metadata (``metadata_props["vislab"]``), written by :func:`vislab.export.onnx.export_onnx`.

Example:
    >>> predictor = OnnxPredictor("runs/digits/model.onnx")          # doctest: +SKIP
    >>> predict_files(predictor, ["digit.png"], top_k=3)              # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vislab.core.config import DEFAULT_TASK
from vislab.core.errors import RunError
from vislab.core.files import onnxruntime_errors, reading
from vislab.data.preprocess import Preprocessing


def is_onnx_path(spec) -> bool:
    return str(spec).lower().endswith(".onnx")


class OnnxModel:
    """An onnxruntime CPU session on a vislab-exported file, and its metadata."""

    def __init__(self, path, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.exists():
            raise RunError(f"{self.path}: no such ONNX file; make one with `vislab export RUN --out {self.path}`")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        with reading(self.path, "an ONNX model onnxruntime can load", "re-export it with `vislab export RUN`",
                     errors=onnxruntime_errors()):
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
            raw = self.session.get_modelmeta().custom_metadata_map.get("vislab")
            if raw is None:
                raise RunError(f"{self.path}: no vislab metadata in this ONNX file, so its classes and "
                               "preprocessing are unknown; export it with `vislab export RUN`")
            self.metadata = json.loads(raw)
            if not isinstance(self.metadata, dict) or "preprocessing" not in self.metadata:
                raise RunError(f"{self.path}: its vislab metadata is damaged; export it again with `vislab export RUN`")
        graph_input = self.session.get_inputs()[0]
        self.input_name = graph_input.name
        self.takes_pixels = bool(self.metadata.get("include_preprocessing"))
        self.fixed_batch = graph_input.shape[0] if isinstance(graph_input.shape[0], int) else None
        self.preprocessing = Preprocessing.from_dict(self.metadata["preprocessing"])

    def _run(self, array: np.ndarray) -> np.ndarray:
        if self.fixed_batch is not None and len(array) != self.fixed_batch:
            # a graph exported without --dynamic-batch takes one image at a time
            return np.concatenate([self._run(array[i:i + 1]) for i in range(len(array))]) if len(array) else array
        return self.session.run(None, {self.input_name: array})[0]

    def run(self, inputs: np.ndarray) -> np.ndarray:
        """Raw outputs for a float32 NCHW batch that is already preprocessed."""
        return self._run(np.ascontiguousarray(inputs, dtype=np.float32))

    def run_uint8(self, images: torch.Tensor) -> np.ndarray:
        """Raw outputs for a uint8 NCHW batch at the input size (a preprocessing graph takes NHWC)."""
        return self._run(np.ascontiguousarray(images.permute(0, 2, 3, 1).numpy()))


@dataclass
class OnnxLoaded:
    """What :class:`vislab.runs.Loaded` offers that an ONNX file can: no PyTorch model.

    The task is made from ``spec`` as a run folder's is (:func:`vislab.runs.task_from_spec`: the task's
    options, then what it stored, such as multi-label thresholds), so the graph answers with the run's
    thresholds.
    """

    preprocessing: Preprocessing
    class_names: list[str]
    spec: dict
    run_dir: Path | None = None
    model: object = None
    task: object = None

    def __post_init__(self):
        if self.task is None:
            from vislab.runs import task_from_spec

            self.task = task_from_spec(self.spec)


class OnnxPredictor:
    """uint8 images -> the task's outputs through onnxruntime, like :class:`vislab.infer.Predictor`.

    ``dtype`` is None and ``recheck_ties`` False: onnxruntime runs the graph in fp32.
    """

    dtype = None
    recheck_ties = False
    rechecked = 0

    def __init__(self, path, threads: int | None = None):
        self.onnx = OnnxModel(path, threads=threads)
        meta = self.onnx.metadata
        self.preprocessing = self.onnx.preprocessing
        # the model.json entries the export kept (task_data: thresholds, palette, task options) make the task
        self.loaded = OnnxLoaded(self.preprocessing, list(meta["class_names"]),
                                 {"name": meta.get("name", str(path)), "task": meta.get("task") or DEFAULT_TASK,
                                  "onnx": str(path), **meta.get("task_data", {})})
        self.task = self.loaded.task
        self.device = torch.device("cpu")

    @torch.inference_mode()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """The graph's raw outputs for a uint8 NCHW batch (as :meth:`vislab.infer.Predictor.logits`)."""
        if self.onnx.takes_pixels:
            from vislab.export.onnx import resized_uint8

            pixels = torch.stack([resized_uint8(self.preprocessing, image) for image in images])
            return torch.from_numpy(self.onnx.run_uint8(pixels))
        return torch.from_numpy(self.onnx.run(self.preprocessing(images).numpy()))

    def outputs(self, images: torch.Tensor) -> torch.Tensor:
        """The task's outputs (class probabilities for classification; per-pixel maps at the images'
        own size) for a uint8 NCHW batch."""
        raw = self.logits(images).float()
        return self.task.postprocess(self.task.at_size(raw, tuple(images.shape[-2:]))).float()

    probabilities = outputs

    def outputs_each(self, images) -> list[torch.Tensor]:
        from vislab.infer.predictor import outputs_each

        return outputs_each(self, images)
