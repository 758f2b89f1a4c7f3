"""Predictor: serve scikit-learn models over HTTP, fast and safely."""

__version__ = "0.1.0"
