"""The BentoML scoring service (ONNX Runtime, no torch)."""
