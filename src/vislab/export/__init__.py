"""Export: a run folder or ``imagenet:NAME`` as an ONNX file with a parity report (onnx.py), and an
onnxruntime predictor for such files (ort.py), used by ``vislab predict model.onnx`` and ``vislab serve``."""

from vislab.export.onnx import ExportError, ExportResult, export_onnx
from vislab.export.ort import OnnxPredictor, is_onnx_path

__all__ = ["ExportError", "ExportResult", "OnnxPredictor", "export_onnx", "is_onnx_path"]
