"""Helpers of the executable book of deep-learning theory: one module per chapter topic, plus
``runtime`` (profiles, validation, seeding, devices), ``plotting`` (one figure style) and ``cli``."""

__version__ = "0.1.0"
