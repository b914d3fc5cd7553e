"""What a build spends per file (#18): chunks written as zarr writes them, QA batched per reference, and the
CPU profile the build reports, on real DNGs, real Zarr and the session's real Dask cluster."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from rawlab.catalog import open_catalog
from rawlab.catalog.build import _qa_batches, _qa_task, build_catalog
from rawlab.catalog.qa import QA_COLUMNS, QAThresholds
from rawlab.catalog.store import FrameStore, default_codec
from rawlab.cluster import RunOptions
from rawlab.synth import write_dataset


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("chunk", [256, 64])
def test_frame_chunks_are_the_bytes_zarr_writes(tmp_path, chunk):
    """Edge chunks (padded), an all-zero chunk (left out) and a full one: the same files and bytes as zarr's own
    write of the same array, and the frame reads back exactly, through zarr and through the store."""
    rng = np.random.default_rng(0)
    planes = rng.integers(0, 4096, (4, 300, 530), dtype=np.uint16)
    planes[:, :64, :64] = 0  # a whole chunk of fill value at chunk 64 (a part of one at 256)
    store = FrameStore(tmp_path / "s.zarr")
    store.initialise({})
    store.write_frame("f", planes, {"path": "x.dng"}, chunk=chunk)
    ref = zarr.open_group(tmp_path / "z.zarr", mode="w", zarr_format=3)
    arr = ref.create_array(
        "raw", shape=planes.shape, dtype=planes.dtype, chunks=(4, chunk, chunk), compressors=[default_codec()],
        dimension_names=("channel", "y", "x"),
    )  # fmt: skip
    arr[...] = planes
    ours, theirs = _files(tmp_path / "s.zarr/frames/f/raw"), _files(tmp_path / "z.zarr/raw")
    assert ours == theirs
    assert ("c/0/0/0" in ours) == (chunk == 256)
    np.testing.assert_array_equal(store.read_frame("f"), planes)
    assert store.frame_attrs("f")["row"] == {"path": "x.dng"}


def test_frames_on_an_fsspec_store_read_back():
    planes = np.random.default_rng(1).integers(0, 1024, (4, 40, 70), dtype=np.uint16)
    store = FrameStore("memory://rawlab-cost-test/s.zarr")
    store.initialise({})
    store.write_frame("f", planes, {"path": "y.dng"}, chunk=32)
    np.testing.assert_array_equal(store.read_frame("f"), planes)
    np.testing.assert_array_equal(store.read_crop("f", 16), planes[:, 12:28, 27:43])


def test_qa_batches_one_per_reference_split_for_idle_workers():
    groups = {"r1": list(range(5)), "r2": [10, 11]}
    assert _qa_batches(groups, 1) == [("r1", [0, 1, 2, 3, 4]), ("r2", [10, 11])]
    four = _qa_batches(groups, 4)
    assert len(four) == 4 and sorted(i for _, items in four for i in items) == [0, 1, 2, 3, 4, 10, 11]
    assert all(all(i < 10 for i in items) if r == "r1" else all(i >= 10 for i in items) for r, items in four)
    assert len(_qa_batches({"r": [1]}, 8)) == 1  # nothing left to split


@pytest.fixture(scope="module")
def built(tmp_path_factory, client):
    root = tmp_path_factory.mktemp("cost")
    write_dataset(root / "data", seed=5, size=(192, 128), n_sensors=1, n_scenes=1)
    store = root / "s.zarr"
    cat, summary = build_catalog([str(root / "data")], str(store), options=RunOptions(client=client))
    return store, cat, summary


def test_the_build_reports_its_cpu_by_phase_and_keeps_it_out_of_the_catalog(built):
    store, cat, summary = built
    n_pairs = int((cat["role"] == "noisy").sum())
    assert summary.n_ingested == len(cat) and n_pairs >= 2
    for phase in ("read", "hash", "decode", "pack", "stats", "write", "other"):
        assert f"ingest: {phase}" in summary.cpu
    assert summary.cpu["ingest: decode"] > 0 and summary.cpu["ingest: write"] > 0
    assert summary.cpu["qa: check"] > 0 and "driver: pairing" in summary.cpu
    assert not any(c.startswith("_") for c in open_catalog(store).columns)


def test_a_qa_batch_reads_the_reference_once_and_a_bad_pair_fails_alone(built, monkeypatch):
    store, cat, _summary = built
    reads = []
    original = FrameStore.read_crop

    def spy(self, fid, size):
        reads.append(fid)
        return original(self, fid, size)

    monkeypatch.setattr(FrameStore, "read_crop", spy)
    ref = cat[cat["role"] == "clean"].iloc[0]
    noisy = cat[(cat["role"] == "noisy") & (cat["clean_path"] == ref["path"])]

    def meta(row):
        keys = ("saturated_frac", "mean_level", "white_level", "iso", "exposure_time")
        return {**{k: row[k] for k in keys}, "black_level": list(row["black_level"])}

    items = [(r["frame_id"], meta(r)) for _, r in noisy.iterrows()]
    items.insert(1, ("0" * 20, items[0][1]))  # a frame the store does not hold
    out = _qa_task(str(store), {}, ref["frame_id"], meta(ref), items, QAThresholds())
    got = out["results"]
    assert len(got) == len(items) and out["_profile"]["check"] > 0
    assert reads.count(ref["frame_id"]) == 1 and sorted(reads[1:]) == sorted(fid for fid, _ in items)
    assert got[1]["status"] == "excluded" and got[1]["reason"].startswith("QA could not run: ")
    for (_, r), res in zip(noisy.iterrows(), got[:1] + got[2:], strict=True):
        assert res["status"] == r["status"] and res["align_dy"] == pytest.approx(r["align_dy"])
        assert set(QA_COLUMNS) <= set(res)
