"""Per-image scores from a trained model: anomaly maps, reconstruction scores, latent distances."""
