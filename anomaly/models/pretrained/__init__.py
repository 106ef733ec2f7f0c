"""Autoencoders whose encoder is a frozen ImageNet-pretrained CNN (model.encoder)."""
