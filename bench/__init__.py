"""Reproducible benchmarks of tuned's overhead; ``python -m bench`` runs them all."""
