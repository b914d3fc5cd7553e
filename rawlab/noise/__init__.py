"""Noise models, fitting and export formats (DESIGN.md, "Noise model" and "Noise profile JSON")."""

from .model import sample_poisson_gaussian, variance
from .profile import ISOProfile, NoiseProfileSet, SensorProfile, load_profiles, save_profiles

__all__ = [
    "ISOProfile",
    "NoiseProfileSet",
    "SensorProfile",
    "load_profiles",
    "sample_poisson_gaussian",
    "save_profiles",
    "variance",
]
