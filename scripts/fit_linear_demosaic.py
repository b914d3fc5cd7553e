"""Fit the joint model's least-squares linear demosaic (``model.spec.demosaic`` ``"ls"``) and write its shipped
weights, ``rawlab/learn/ls_demosaic.npy`` (:mod:`rawlab.learn.lsdemosaic` says what it is fitted to).

    python scripts/fit_linear_demosaic.py            # prints the leave-one-photograph-out table, writes the file
"""

from __future__ import annotations

import numpy as np


def main() -> None:
    from rawlab.learn import lsdemosaic

    print("mu: mean / worst gain over MHC (dB) on each fitting photograph left out of the fit")
    for mu, (mean, worst) in lsdemosaic.choose_mu().items():
        print(f"  {mu:g}: {mean:+.2f} / {worst:+.2f}{'  <- MU' if mu == lsdemosaic.MU else ''}")
    np.save(lsdemosaic.KERNEL_PATH, lsdemosaic.fit_shipped())
    print(f"wrote {lsdemosaic.KERNEL_PATH}")


if __name__ == "__main__":
    main()
