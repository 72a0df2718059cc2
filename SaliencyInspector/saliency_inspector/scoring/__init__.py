"""Scoring maps: agreement with organ masks (Dice, ROC AUC, ...) and the one-sort exact ROC/PR."""
