"""quadselect: choose pretraining data by influence (quality) and cluster bandits (diversity)."""

__version__ = "0.1.0"
