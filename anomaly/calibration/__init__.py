"""NumPy/SciPy-only calibration: importable without torch, shared with the service."""
