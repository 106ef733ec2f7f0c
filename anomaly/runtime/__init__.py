"""Torch-free inference: ONNX Runtime sessions, model directories, calibrated results."""
