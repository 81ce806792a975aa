"""Exports: SavedModels for TF Serving, TFLite files, ONNX; each verified before it is declared written."""

from tfllm.export.litert_generator import LiteRTGenerator
from tfllm.export.onnx import OnnxGenerator, onnx
from tfllm.export.saved_model import saved_model
from tfllm.export.tflite import tflite
from tfllm.export.verify import ExportVerificationError

# `tflite` and `onnx` are the functions; their modules stay importable as `tfllm.export.tflite` etc.
__all__ = ["ExportVerificationError", "LiteRTGenerator", "OnnxGenerator", "onnx", "saved_model", "tflite"]
