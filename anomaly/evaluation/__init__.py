"""Evaluation on labelled test images: metrics, plots, the one-class protocol."""
