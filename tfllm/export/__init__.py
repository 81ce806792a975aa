"""Exports: SavedModels for TF Serving, TFLite files, ONNX; each verified before it is declared written."""

from tfllm.export.saved_model import saved_model
from tfllm.export.verify import ExportVerificationError

__all__ = ["ExportVerificationError", "saved_model"]
