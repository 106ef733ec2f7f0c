"""`anomaly pipeline run`: train -> calibrate -> evaluate -> export -> parity -> register -> promote."""
