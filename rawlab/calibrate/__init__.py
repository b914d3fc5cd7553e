"""Sensor calibration from dark frames and flat fields: EMVA 1288 figures per sensor, ISO and channel
(``rawlab calibrate``; schema ``rawlab.calibration/1``, docs/architecture.md)."""

from .fit import FIGURES, fit_iso, linearity_error
from .pipeline import SCHEMA, CalibrationResult, calibrate

__all__ = ["FIGURES", "SCHEMA", "CalibrationResult", "calibrate", "fit_iso", "linearity_error"]
