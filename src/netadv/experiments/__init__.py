"""Experiments: data, models, training loop, reports."""
