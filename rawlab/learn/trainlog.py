"""What training writes as it goes: ``WORKDIR/metrics.csv`` and TensorBoard events in ``WORKDIR/tb``.

One CSV for train and eval rows (``split`` tells them apart), so a spreadsheet or ``pandas.read_csv`` reads
the whole run. A resumed run first drops the rows past the checkpoint it resumes from, so the file never holds
two rows for one step. TensorBoard needs ``tensorboardX`` (the ``train`` extra); without it only the CSV is
written.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

__all__ = ["COLUMNS", "MetricsLog"]

COLUMNS = ("step", "split", "loss", "l1", "ssim", "psnr", "lr", "grad_norm", "images_per_s", "wall_s")


class MetricsLog:
    """Appends metric rows to ``metrics.csv`` and TensorBoard scalars (``train/loss``, ``eval/psnr``, ...)."""

    def __init__(self, workdir: Path, start_step: int, *, tensorboard: bool = True):
        self.path = Path(workdir) / "metrics.csv"
        kept = []
        if self.path.exists():
            with self.path.open(newline="") as f:
                kept = [
                    r
                    for r in csv.DictReader(f)
                    if r.get("step", "").isdigit() and int(r["step"]) <= start_step
                ]
        with self.path.open("w", newline="") as f:
            w = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
            w.writeheader()
            w.writerows(kept)
        self._file = self.path.open("a", newline="")
        self._csv = csv.DictWriter(self._file, COLUMNS, extrasaction="ignore")
        self.tb = None
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                self.note = (
                    "tensorboardX is not installed (pip install 'rawlab[train]'): metrics go to the CSV only"
                )
            else:
                self.tb = SummaryWriter(str(Path(workdir) / "tb"))
                self.note = None
        else:
            self.note = None

    def write(self, step: int, split: str, values: dict[str, float]) -> None:
        row = {"step": step, "split": split}
        for k in COLUMNS[2:]:
            v = values.get(k)
            row[k] = "" if v is None else (f"{v:.6g}" if math.isfinite(v) else str(v))
        self._csv.writerow(row)
        self._file.flush()
        if self.tb is not None:
            for k, v in values.items():
                if v is not None and math.isfinite(v):
                    self.tb.add_scalar(f"{split}/{k}", v, step)

    def close(self) -> None:
        self._file.close()
        if self.tb is not None:
            self.tb.close()
