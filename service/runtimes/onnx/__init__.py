"""The compiled ONNX runtime: runtime.py serves, compile.py converts, verify.py proves
the graph equal to the estimator, trees.py converts tree ensembles exactly."""

from .runtime import OnnxRuntime

__all__ = ["OnnxRuntime"]
