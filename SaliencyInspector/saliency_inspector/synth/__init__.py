"""Synthetic data: the CT phantom with organs and lesions."""
