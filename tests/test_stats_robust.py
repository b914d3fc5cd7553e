"""``rawlab stats`` under hostile conditions (#17): stores with nothing readable, unwritable outputs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rawlab.catalog.build import build_catalog
from rawlab.cluster import RunOptions
from rawlab.errors import RawlabError
from rawlab.stats import compute_stats
from rawlab.synth import write_dataset


def _cli(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "rawlab", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def _one_line_error(res) -> str:
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    return lines[0]


@pytest.fixture(scope="module")
def failed_only_store(tmp_path_factory, client):
    """A store whose only file LibRaw cannot read: its catalog has one failed row and no sensor."""
    root = tmp_path_factory.mktemp("failed")
    (root / "data").mkdir()
    (root / "data" / "broken.dng").write_bytes(b"II*\x00" + bytes(500))
    store = root / "store.zarr"
    cat, _ = build_catalog([str(root / "data")], str(store), options=RunOptions(client=client))
    assert len(cat) == 1 and (cat["status"] == "failed").all()
    return store


def test_stats_on_a_store_with_only_failed_files_says_so(failed_only_store, tmp_path):
    """#17.6: a store with nothing readable gave no clear answer (an empty one: KeyError: 'sensor')."""
    line = _one_line_error(_cli("stats", failed_only_store, "--out", tmp_path / "report", "--workers", "1"))
    assert "holds no readable frames" in line and "its only file failed to read" in line, line
    assert not (tmp_path / "report" / "report.html").exists()


def test_stats_on_an_empty_store_says_so(tmp_path):
    """#17.6: ``KeyError: 'sensor'``. The store is what a build of an empty folder leaves: initialised, with
    an empty catalog (written here through the store's own API, as the build does)."""
    import pandas as pd

    from rawlab.catalog.store import FrameStore

    fs = FrameStore(tmp_path / "empty.zarr")
    fs.initialise({})
    fs.write_catalog(pd.DataFrame())
    line = _one_line_error(
        _cli("stats", tmp_path / "empty.zarr", "--out", tmp_path / "report", "--workers", "1")
    )
    assert "holds no readable frames: its catalog lists no files" in line, line
    with pytest.raises(RawlabError, match="holds no readable frames"):
        compute_stats(str(tmp_path / "empty.zarr"))  # the library says the same, before starting a cluster


def test_stats_refuses_an_unwritable_out_before_reading(tmp_path, client):
    """#17.5: an unwritable --out was found after both passes over the store, with a traceback."""
    write_dataset(tmp_path / "data", seed=2, size=(64, 48), n_sensors=1, n_scenes=1)
    store = tmp_path / "store.zarr"
    build_catalog([str(tmp_path / "data")], str(store), options=RunOptions(client=client))
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    line = _one_line_error(_cli("stats", store, "--out", blocker / "report", "--workers", "1"))
    assert "afile" in line and "not a folder" in line, line
