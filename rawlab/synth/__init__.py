"""A synthetic dataset of real DNG files with known Poisson-Gaussian noise (``rawlab synth``)."""

from .generate import DEFAULT_SIZE, SynthSummary, write_dataset
from .sensors import SENSORS, VirtualSensor, get_sensors

__all__ = ["DEFAULT_SIZE", "SENSORS", "SynthSummary", "VirtualSensor", "get_sensors", "write_dataset"]
