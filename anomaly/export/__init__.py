"""ONNX export, parity checks, int8 quantisation, model cards and the MLflow registry."""
