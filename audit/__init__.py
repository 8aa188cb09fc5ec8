"""Audit an ONNX image classifier against acceptance criteria; see ``python -m audit --help``."""

__version__ = "0.1.0"
