"""The inference layer: predictor (precision, channels_last, batching, task outputs) and file inputs.

Evaluate, explain, export and serve all predict through here.
"""

from vislab.infer.files import predict_files
from vislab.infer.predictor import Predictor

__all__ = ["Predictor", "predict_files"]
