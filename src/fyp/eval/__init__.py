"""Evaluation: datasets, replay and offline metrics."""
