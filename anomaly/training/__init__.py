"""Training: losses, the LightningModule, MLflow tracking."""
