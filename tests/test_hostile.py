"""The reproductions of issue #17, as a hostile but realistic user meets them, on the real stack.

Real DNG files (rawlab.synth), real rawpy, real Zarr stores, a real Dask LocalCluster, and the `rawlab` CLI in
subprocesses where the exit code and what the user sees matter. The full disk and the read-only store are real
too: a small tmpfs mounted for the test (skipped where mounting is not permitted).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rawlab.catalog import open_catalog
from rawlab.catalog.build import build_catalog
from rawlab.catalog.store import LOCK, FrameStore, StoreLock
from rawlab.cluster import RunOptions
from rawlab.errors import RawlabError
from rawlab.synth import write_dataset

SIZE = (256, 192)  # mosaic px: 14 files of ~100 KB a dataset, ~80 KB a stored frame


def _cli(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "rawlab", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def _clean(res) -> None:
    """What a user must never see: a traceback, from the CLI or its workers, or distributed's shutdown noise."""
    for text in (res.stdout, res.stderr):
        assert "Traceback" not in text and "CommClosedError" not in text, text


def _assert_same_store(store: Path, ref: Path) -> pd.DataFrame:
    """Same catalog rows and same pixels as the reference store, nothing half-written, no lock left."""
    cat, want = open_catalog(store), open_catalog(ref)
    pd.testing.assert_frame_equal(cat, want)
    complete, incomplete = FrameStore(store).frames_state()
    assert incomplete == [] and set(complete) == set(FrameStore(ref).list_frames())
    for fid in complete:
        np.testing.assert_array_equal(FrameStore(store).read_frame(fid), FrameStore(ref).read_frame(fid))
    assert not (store / LOCK).exists() and not (store / ".catalog.parquet.tmp").exists()
    return cat


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    write_dataset(root / "data", seed=3, size=SIZE, n_sensors=1, n_scenes=2)
    return root / "data"


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory, client):
    """The store one plain build of ``data`` makes."""
    store = tmp_path_factory.mktemp("ref") / "ref.zarr"
    build_catalog([str(data)], str(store), options=RunOptions(client=client))
    return store


# -- 1. two builds into one store at once -----------------------------------------------------------------------


def test_two_concurrent_builds_leave_the_store_one_build_makes(data, reference, tmp_path):
    """Both builds are started while the store is held, so both really wait: when it is free, one builds and
    the other waits for it, then reuses everything. Both exit 0; the store is the one a single build makes."""
    store = tmp_path / "s.zarr"
    holder = StoreLock(FrameStore(store))
    holder.acquire()
    procs, errs, readers = [], [], []
    for _ in range(2):
        p = subprocess.Popen(
            [sys.executable, "-m", "rawlab", "catalog", "build", str(data), "--out", str(store), "--workers", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        lines: list[str] = []
        reader = threading.Thread(target=lambda p=p, lines=lines: lines.extend(p.stderr), daemon=True)
        reader.start()
        readers.append(reader)
        procs.append(p)
        errs.append(lines)
    deadline = time.monotonic() + 120
    while not all(any("being written by another build" in x for x in e) for e in errs):
        assert time.monotonic() < deadline, errs
        assert all(p.poll() is None for p in procs), errs
        time.sleep(0.1)
    assert all(f"pid {os.getpid()} on {socket.gethostname()}" in "".join(e) for e in errs)
    holder.release()
    outs = [p.stdout.read() for p in procs]  # to the end: the build has finished
    for p, reader in zip(procs, readers, strict=True):
        p.wait(timeout=60)
        reader.join(timeout=60)
    for p, out, err in zip(procs, outs, errs, strict=True):
        assert p.returncode == 0, (out, "".join(err))
        _clean(subprocess.CompletedProcess(p.args, p.returncode, out, "".join(err)))
    n = len(list(data.rglob("*.dng")))
    assert sorted(o.split(" ingested")[0].rsplit(" ", 1)[-1] for o in outs) == ["0", str(n)], outs
    _assert_same_store(store, reference)


def test_a_stale_lock_is_recovered_and_a_live_one_refused(data, reference, tmp_path, client):
    store = tmp_path / "s.zarr"
    store.mkdir()
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = {"pid": int(gone.stdout), "host": socket.gethostname(), "started": "2020-01-01", "token": "killed"}
    (store / LOCK).write_text(json.dumps(dead))  # what a build killed with SIGKILL leaves
    notes = []
    build_catalog([str(data)], str(store), wait=0, options=RunOptions(client=client, echo=notes.append))
    assert any("recovering a stale lock" in n and str(dead["pid"]) in n for n in notes), notes
    _assert_same_store(store, reference)

    live = {"pid": os.getpid(), "host": socket.gethostname(), "started": "now", "token": "someone-else"}
    (store / LOCK).write_text(json.dumps(live))
    res = _cli("catalog", "build", data, "--out", store, "--wait", "0.5")
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert f"store {store} is being written by another build (pid {os.getpid()}" in res.stderr
    assert str(store / LOCK) in res.stderr  # the remedy names the file to delete if no build runs
    _clean(res)
    assert json.loads((store / LOCK).read_text())["token"] == "someone-else"  # not taken from its holder
    (store / LOCK).unlink()
    _assert_same_store(store, reference)


def test_a_new_store_being_locked_is_not_taken_for_a_foreign_folder(tmp_path):
    """Two first builds: the second may look while the first's lock (or its private copy, linked into place)
    is the only thing in the new folder; that is a store being made, not someone else's folder."""
    store = tmp_path / "s.zarr"
    store.mkdir()
    (store / LOCK).write_text("{}")
    (store / f"{LOCK}.0123abcd").write_text("{}")
    FrameStore(store).check_target()
    (store / "notes.txt").write_text("a user's file")
    with pytest.raises(RawlabError, match="exists and is not a rawlab store"):
        FrameStore(store).check_target()


def test_lock_on_an_fsspec_store_is_best_effort_but_holds():
    """Object stores (here fsspec's memory://) have no atomic create: the lock is written, then read back."""
    a = StoreLock(FrameStore("memory://hostile-lock/s.zarr"))
    a.acquire()
    with pytest.raises(RawlabError, match="being written by another build"):
        StoreLock(FrameStore("memory://hostile-lock/s.zarr"), wait=0).acquire()
    a.release()
    with StoreLock(FrameStore("memory://hostile-lock/s.zarr"), wait=0) as b:
        assert b.holder()["token"] == b.info["token"]
    assert b.holder() is None


# -- 2. a second folder into an existing store ------------------------------------------------------------------


def test_folders_built_one_after_another_merge_like_one_build(data, tmp_path, client):
    data4 = tmp_path / "data4"
    write_dataset(data4, seed=4, size=SIZE, n_sensors=2, n_scenes=1)
    opts = RunOptions(client=client)
    one, merged = tmp_path / "one.zarr", tmp_path / "merged.zarr"
    build_catalog([str(data), str(data4)], str(one), options=opts)
    build_catalog([str(data)], str(merged), options=opts)
    _, second = build_catalog([str(data4)], str(merged), options=opts)
    n4 = len(list(data4.rglob("*.dng")))
    assert second.n_ingested == n4 and second.n_kept == len(list(data.rglob("*.dng")))
    _assert_same_store(merged, one)
    show = _cli("catalog", "show", merged, "--json")
    assert show.returncode == 0, show.stderr
    summary = json.loads(show.stdout)
    assert summary["files"] == len(list(data.rglob("*.dng"))) + n4
    assert {s["sensor"] for s in summary["sensors"]} == {"SynthCam PG-1", "SynthCam MP-2"}

    # Rebuilding a source after deleting one of its files drops that row only; the other source stays. The
    # rows reused keep the format the decoder saw (DNG), not the scan's guess from the first bytes (#9).
    gone = sorted(data4.rglob("*_iso3200_0.dng"))[0]
    gone.unlink()
    _, third = build_catalog([str(data4)], str(merged), options=opts)
    assert third.n_ingested == 0
    cat = open_catalog(merged)
    assert str(gone) not in set(cat["path"]) and len(cat) == summary["files"] - 1
    assert (cat["raw_format"] == "DNG").all(), cat["raw_format"].value_counts()
    fresh = tmp_path / "fresh.zarr"
    build_catalog([str(data), str(data4)], str(fresh), options=opts)
    _assert_same_store_catalog_only(merged, fresh)


def _assert_same_store_catalog_only(store: Path, ref: Path) -> None:
    """Same catalog; the store may hold more frames (a deleted file's pixels stay, unlisted)."""
    pd.testing.assert_frame_equal(open_catalog(store), open_catalog(ref))
    assert set(FrameStore(ref).list_frames()) <= set(FrameStore(store).list_frames())


def test_a_rerun_keeps_raw_format(data, reference, tmp_path, client):
    store = tmp_path / "s.zarr"
    shutil.copytree(reference, store)
    _, again = build_catalog([str(data)], str(store), options=RunOptions(client=client))
    assert again.n_reused == again.n_files
    assert (open_catalog(store)["raw_format"] == "DNG").all()


# -- 3. identical content ---------------------------------------------------------------------------------------


def test_two_copies_of_one_dng_do_not_change_the_noise_fit(data, reference, tmp_path, client):
    """A copy of a clean frame in its own folder used to become the clean frame's noisy partner (gain 1,
    shift 0, zero residual) and drag the fitted noise towards zero. Now it is the same frame, listed once."""
    from rawlab.noise.pipeline import fit_store

    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    clean = sorted((copy / "SynthCam_PG-1" / "chart").glob("*_iso100_0.dng"))[0]
    shutil.copy(clean, clean.with_name("z_copy.dng"))
    opts = RunOptions(client=client)
    store = tmp_path / "s.zarr"
    cat, summary = build_catalog([str(copy)], str(store), options=opts)
    assert summary.n_duplicates == 1 and summary.n_files == len(list(copy.rglob("*.dng")))
    row = cat.set_index("path").loc[str(clean)]
    assert row["role"] == "clean" and list(row["other_paths"]) == [str(clean.with_name("z_copy.dng"))]
    assert (cat.loc[cat["role"] == "noisy", "clean_path"] != cat.loc[cat["role"] == "noisy", "path"]).all()
    ref = open_catalog(reference)
    assert summary.n_pairs == int(((ref["role"] == "noisy") & (ref["status"] == "ok")).sum())
    fits = [
        fit_store(str(s), sensor="all", method="paired", bootstrap=20, options=opts)
        for s in (reference, store)
    ]
    want, got = (f.profiles.sensor("SynthCam PG-1") for f in fits)
    assert [p.iso for p in got.profiles] == [p.iso for p in want.profiles]
    for p, q in zip(got.profiles, want.profiles, strict=True):
        np.testing.assert_array_equal(p.a, q.a)
        np.testing.assert_array_equal(p.b, q.b)


def test_a_pair_with_zero_residual_is_excluded_with_the_reason(tmp_path, client):
    """Same pixels under another ISO tag (a re-saved copy: another hash) pair and are caught by QA."""
    from rawlab.dng import read_dng_tags, write_dng
    from rawlab.rawio import read_raw

    data = tmp_path / "data"
    write_dataset(data, seed=6, size=SIZE, n_sensors=1, n_scenes=1)
    scene = sorted(p for p in (data / "SynthCam_PG-1").iterdir() if p.is_dir())[0]
    src = sorted(scene.glob("*_iso100_0.dng"))[0]
    frame, tags = read_raw(src), read_dng_tags(src)
    fake = scene / "resaved_iso800_0.dng"
    write_dng(fake, frame.mosaic, iso=800, cfa=frame.info.cfa, black_level=frame.info.black_level,
              white_level=frame.info.white_level, make="SynthCam", model="PG-1",
              exposure_time=tags["exposure_time"] / 8)  # fmt: skip
    cat, _ = build_catalog([str(data)], str(tmp_path / "s.zarr"), options=RunOptions(client=client))
    row = cat.set_index("path").loc[str(fake)]
    assert row["role"] == "noisy" and row["clean_path"] == str(src)
    assert row["status"] == "excluded" and row["error"].startswith("identical to its reference")


# -- 4. the machine's I/O errors --------------------------------------------------------------------------------


@contextlib.contextmanager
def _tmpfs(path: Path, size: str):
    path.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.decode().strip()}); needs root and mount rights")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _remount(path: Path, opts: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{opts}", str(path)], check=True)


def _used_kib(path: Path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize // 1024


def test_a_full_disk_stops_the_build_and_leaves_the_store_as_it_was(data, reference, tmp_path, client):
    """A real full file system (tmpfs). Fresh store: exit 2, one clear line, no catalog, no temporary file,
    nothing half-written. Update: exit 2, the catalog exactly as before, no good file recorded as failed.
    With space again, the next build completes the store a single build makes."""
    with _tmpfs(tmp_path / "disk", "320k") as disk:
        store = disk / "s.zarr"
        res = _cli(
            "catalog", "build", data, "--out", store, "--workers", "2"
        )  # two tasks in flight at the stop
        assert res.returncode == 2, (res.stdout, res.stderr)
        assert "No space left on device [ENOSPC]" in res.stderr and "as it was before" in res.stderr
        assert len(res.stderr.strip().splitlines()) <= 2, res.stderr  # the dashboard note and the error
        _clean(res)
        assert not (store / "catalog.parquet").exists() and not (store / ".catalog.parquet.tmp").exists()
        assert FrameStore(store).frames_state()[1] == [] and not (store / LOCK).exists()

        _remount(disk, "size=4m")
        opts = RunOptions(client=client)
        build_catalog([str(data)], str(store), options=opts)
        _assert_same_store(store, reference)
        before = open_catalog(store)

        more = tmp_path / "more"
        write_dataset(more, seed=12, size=SIZE, n_sensors=1, n_scenes=1)
        shutil.copytree(more / "SynthCam_PG-1", data.parent / "update" / "SynthCam_PG-1")
        update = data.parent / "update"
        _remount(disk, f"size={_used_kib(disk) + 120}k")  # room for about one more frame
        res = _cli("catalog", "build", data, update, "--out", store, "--workers", "1")
        assert res.returncode == 2 and "No space left on device" in res.stderr, (res.stdout, res.stderr)
        _clean(res)
        pd.testing.assert_frame_equal(open_catalog(store), before)  # nothing recorded failed, nothing lost
        assert FrameStore(store).frames_state()[1] == [] and not (store / ".catalog.parquet.tmp").exists()

        _remount(disk, "size=8m")
        build_catalog([str(data), str(update)], str(store), options=opts)
        cat = open_catalog(store)
        assert (cat["status"] != "failed").all() and len(cat) == len(before) + len(
            list(update.rglob("*.dng"))
        )
        shutil.rmtree(update)


def test_a_read_only_store_is_a_clear_error(data, reference, tmp_path):
    with _tmpfs(tmp_path / "disk", "4m") as disk:
        shutil.copytree(reference, disk / "s.zarr")
        _remount(disk, "ro")
        res = _cli("catalog", "build", data, "--out", disk / "s.zarr")
        assert res.returncode == 2 and "Read-only file system [EROFS]" in res.stderr, res.stderr
        _clean(res)
        _remount(disk, "rw")
        _assert_same_store(disk / "s.zarr", reference)


# -- 6. smaller ones --------------------------------------------------------------------------------------------


def test_an_empty_source_folder_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not a raw")
    res = _cli("catalog", "build", tmp_path / "empty", "--out", tmp_path / "s.zarr")
    assert res.returncode == 2 and "no raw files in" in res.stderr and "1 other files skipped" in res.stderr
    _clean(res)
    assert not (tmp_path / "s.zarr").exists()


def test_libraw_end_of_file_message_names_the_file(data, tmp_path, capfd):
    """LibRaw prints "Unexpected end of file" itself; read from memory (as the build reads) it said "unknown
    file". The message now names the file."""
    from rawlab.errors import RawReadError
    from rawlab.rawio import read_raw

    whole = sorted(data.rglob("*.dng"))[0].read_bytes()
    cut = tmp_path / "cut.dng"
    with pytest.raises(RawReadError):
        read_raw(whole[: len(whole) // 2], name=str(cut))
    err = capfd.readouterr().err
    assert f"{cut}: Unexpected end of file" in err and "unknown file" not in err
