"""Evaluation: the driver, its summary, evaluation sets, metrics, BD-rate, plots and baselines."""
