"""Data sources, splits, synthetic anomalies, and the Lightning DataModule."""
