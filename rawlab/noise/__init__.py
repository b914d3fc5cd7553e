"""Noise models, fitting and export formats (docs/architecture.md, "Units and conventions" and "File formats")."""

from .model import sample_poisson_gaussian, variance
from .profile import ISOProfile, NoiseProfileSet, SensorProfile, load_profiles, save_profiles

__all__ = [
    "ISOProfile",
    "NoiseProfileSet",
    "SensorProfile",
    "fit_store",
    "load_profiles",
    "sample_poisson_gaussian",
    "save_profiles",
    "variance",
]


def __getattr__(name: str):
    if name == "fit_store":  # imports dask: keep `import rawlab.noise` light
        from .pipeline import fit_store

        return fit_store
    raise AttributeError(name)
