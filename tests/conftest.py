"""Shared fixtures: the real camera samples in ../shared and small synthetic datasets written as real DNGs."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT.parent / "shared" / "raw-samples"


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """../shared/raw-samples, or a skip when this checkout has no shared/ beside it."""
    if not (SAMPLES / "MANIFEST.csv").is_file():
        pytest.skip("../shared/raw-samples is not present beside this checkout")
    return SAMPLES


@pytest.fixture(scope="session")
def small_synth(tmp_path_factory):
    """A small two-sensor synthetic dataset (real DNG files), written once per test session."""
    from rawlab.synth import write_dataset

    out = tmp_path_factory.mktemp("synth")
    summary = write_dataset(out, seed=7, size=(128, 96), n_sensors=2, n_scenes=2)
    return summary


@pytest.fixture(scope="session")
def client():
    """One real two-process Dask LocalCluster, with rawlab's own worker settings, for the whole session."""
    from rawlab.cluster import dask_client

    with dask_client(workers=2) as (c, _info):
        yield c


@pytest.fixture(scope="session")
def learn_store(tmp_path_factory, client):
    """A small paired store for the learning tests: 2 sensors x 2 scenes (one held out each), 256x192 frames
    (128x96 packed), built by the real catalog build. Returns ``(store, truth_path)``."""
    from rawlab.catalog.build import build_catalog
    from rawlab.cluster import RunOptions
    from rawlab.synth import write_dataset

    root = tmp_path_factory.mktemp("learn")
    summary = write_dataset(root / "data", seed=3, size=(256, 192), n_sensors=2, n_scenes=2)
    store = root / "store.zarr"
    build_catalog([str(root / "data")], str(store), options=RunOptions(client=client))
    return store, summary.truth_path
