"""Classifiers: loading with model cards, the exact model-input mapping, the shipped demo model."""
