"""Training classifiers on a cohort manifest: BCE, optionally plus Draelos's HiResCAM mask loss."""
