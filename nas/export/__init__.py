"""Export of architectures as ready-to-train models: standalone PyTorch source, JSON, TorchScript, ONNX,
safe weights files and a standalone training script. Entry point: `export`."""

from nas.export.formats import FORMATS, ONNX_OPSET, export, weights_path
from nas.export.python_codegen import ExportError, python_source
from nas.export.train_script import TrainConfig, train_script
from nas.export.weights import WeightsError, load_weights, save_weights

__all__ = [
    "FORMATS", "ONNX_OPSET", "ExportError", "TrainConfig", "WeightsError", "export", "load_weights",
    "python_source", "save_weights", "train_script", "weights_path",
]
