"""The training input pipeline on a real store: pairing, exposure matching, Bayer-preserving augmentation,
synthetic noise, determinism, chunk reads, and the configs."""

from __future__ import annotations

import numpy as np
import pytest

from rawlab.bayer import CFA_PATTERNS, pack, unpack
from rawlab.catalog import open_catalog
from rawlab.catalog.pairs import pairs_from_catalog
from rawlab.catalog.qa import normalise
from rawlab.catalog.store import FrameStore
from rawlab.errors import RawlabError
from rawlab.learn.augment import N_OPS, augment_packed, op_bits
from rawlab.learn.input_pipeline import ChunkReader, Pipeline
from rawlab.learn.split import split_pairs
from rawlab.learn.synthnoise import SensorNoise, sensor_noise, synthesize
from rawlab.noise.profile import ISOProfile, SensorProfile, load_profiles

COLOUR = np.array([0, 1, 1, 2])  # R, G1, G2, B -> R, G, B


def _mosaic_reference(planes: np.ndarray, cfa: str, op: int) -> np.ndarray:
    """``op`` done on the mosaic, then the one-pixel crop that gives the sensor's own CFA phase back."""
    t, fy, fx = op_bits(op)

    def transform(m):
        m = m.T if t else m
        m = m[::-1] if fy else m
        return m[:, ::-1] if fx else m

    mosaic = transform(unpack(planes, cfa))
    colours = transform(unpack(np.broadcast_to(COLOUR[:, None, None], planes.shape), cfa))
    want = unpack(COLOUR[:, None, None], cfa)  # the sensor's 2x2 colour tile
    h, w = mosaic.shape[0] // 2 - 1, mosaic.shape[1] // 2 - 1
    for oy, ox in ((0, 0), (0, 1), (1, 0), (1, 1)):
        if np.array_equal(colours[oy : oy + 2, ox : ox + 2], want):
            return pack(mosaic[oy : oy + 2 * h, ox : ox + 2 * w], cfa)
    raise AssertionError("no phase-preserving crop")


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
def test_packed_augmentation_equals_the_mosaic_operation(cfa):
    rng = np.random.default_rng(1)
    for op in range(N_OPS):
        for h, w in ((5, 5), (6, 9)):
            planes = rng.integers(0, 4096, (4, h, w)).astype(np.uint16)
            got = augment_packed(np.moveaxis(planes, 0, -1), cfa, op)
            want = np.moveaxis(_mosaic_reference(planes, cfa, op), 0, -1)
            assert got.shape == want.shape == (((w - 1, h - 1) if op_bits(op)[0] else (h - 1, w - 1)) + (4,))
            np.testing.assert_array_equal(got, want, err_msg=f"{cfa} op {op} ({h}x{w})")
    # A batch is augmented like each of its images; every op keeps a square crop square.
    batch = rng.random((3, 9, 9, 4)).astype(np.float32)
    out = augment_packed(batch, cfa, 5)
    assert out.shape == (3, 8, 8, 4)
    np.testing.assert_array_equal(out[1], augment_packed(batch[1], cfa, 5))


def test_channels_keep_their_colour_and_flips_shift_by_the_cfa_site():
    planes = np.arange(4 * 4 * 4).reshape(4, 4, 4)
    chan = np.moveaxis(np.broadcast_to(np.arange(4)[:, None, None], planes.shape), 0, -1)
    for cfa in CFA_PATTERNS:
        # Every output channel samples one input channel of the same colour: R from R, B from B,
        # and each green from a green (G1 <-> G2 under a transpose, since rows become columns).
        for op in range(N_OPS):
            src = augment_packed(chan, cfa, op)
            for c in range(4):
                uniq = np.unique(src[..., c])
                assert uniq.size == 1 and COLOUR[uniq[0]] == COLOUR[c]
                if c in (1, 2):
                    assert uniq[0] == (3 - c if op_bits(op)[0] else c)
    # Identity: the window minus its last row and column.
    hwc = np.moveaxis(planes, 0, -1)
    np.testing.assert_array_equal(augment_packed(hwc, "RGGB", 0), hwc[:3, :3])
    # A horizontal flip keeps the channels on the left column of the 2x2 tile in place (x -> W-1-x) and moves
    # those on the right column by one (x -> W-2-x): R and G2 of RGGB, but G1 and B of BGGR.
    flipped = hwc[:, ::-1]
    for cfa, left in (("RGGB", (0, 2)), ("BGGR", (1, 3))):
        out = augment_packed(hwc, cfa, 1)
        for c in range(4):
            want = flipped[:3, :3, c] if c in left else flipped[:3, 1:, c]
            np.testing.assert_array_equal(out[..., c], want, err_msg=f"{cfa} channel {c}")


@pytest.fixture(scope="module")
def learn(learn_store):
    store, truth_path = learn_store
    cat = open_catalog(store)
    train_rows, eval_rows = split_pairs(cat)
    pairs, notes = pairs_from_catalog(cat, train_rows)
    noise = sensor_noise(load_profiles(truth_path), {p.sensor for p in pairs}, truth_path)
    return {
        "store": store,
        "cat": cat,
        "pairs": pairs,
        "notes": notes,
        "noise": noise,
        "eval_rows": eval_rows,
    }


def test_pairs_come_from_the_train_split_and_their_references(learn):
    cat, pairs = learn["cat"], learn["pairs"]
    assert pairs and not learn["notes"]
    by_id = cat.drop_duplicates("frame_id").set_index("frame_id")
    held = {(s, c) for s, c in zip(learn["eval_rows"]["sensor"], learn["eval_rows"]["scene"], strict=True)}
    for p in pairs:
        noisy, ref = by_id.loc[p.frame_id], by_id.loc[p.ref_id]
        assert noisy["role"] == "noisy" and ref["role"] == "clean" and noisy["clean_path"] == ref["path"]
        assert noisy["scene"] == ref["scene"] == p.scene and (p.sensor, p.scene) not in held
        assert p.iso == noisy["iso"] and p.cfa == noisy["cfa"] and p.shape == (96, 128)


def test_real_examples_are_aligned_exposure_matched_crops_of_the_pair(learn):
    fstore = FrameStore(learn["store"])
    pipe = Pipeline(fstore, learn["pairs"], learn["noise"], crop=32, batch_size=8, augment=False, workers=0)
    means = []
    for i in range(8):
        e = pipe.example(0, i)
        assert not e["synthetic"]
        p = next(p for p in pipe.pairs if p.frame_id == e["frame_id"])
        y, x, (sy, sx), n = e["y"], e["x"], p.shift, 33
        noisy = normalise(
            fstore.read_frame(p.frame_id)[:, y : y + n, x : x + n], p.black_level, p.white_level
        )
        ref = fstore.read_frame(p.ref_id)[:, y - sy : y - sy + n, x - sx : x - sx + n]
        clean = normalise(ref, p.ref_black_level, p.ref_white_level) * np.float32(p.gain)[:, None, None]
        np.testing.assert_array_equal(e["noisy"], np.moveaxis(noisy, 0, -1)[:32, :32])
        np.testing.assert_array_equal(e["clean"], np.moveaxis(clean, 0, -1)[:32, :32])
        np.testing.assert_allclose(e["a"], learn["noise"][p.sensor].params(p.iso)[0])
        means.append((e["noisy"].mean(), e["clean"].mean()))
        # Same scene and window: the clean crop explains the noisy one up to the noise.
        assert np.corrcoef(e["noisy"].ravel(), e["clean"].ravel())[0, 1] > 0.9
    m = np.array(means)
    np.testing.assert_allclose(m[:, 1], m[:, 0], rtol=0.03, atol=2e-3)  # exposure matched


def test_synthetic_noise_has_the_requested_variance():
    rng = np.random.default_rng(0)
    a, b = np.array([1e-3, 5e-4, 5e-4, 2e-3]), np.array([2e-5, 1e-5, 1e-5, 4e-5])
    x = np.full((512, 512, 4), 0.3, np.float32)
    noisy = synthesize(x, a, b, rng, black_level=[64] * 4, white_level=16383)
    span = 16383 - 64
    want = a * 0.3 + b + 1 / (12 * span**2)  # + the rounding to DN
    n = 512 * 512
    var = noisy.reshape(-1, 4).var(axis=0, ddof=1)
    assert np.all(np.abs(var / want - 1) < 5 * np.sqrt(2 / n)), var / want
    assert np.all(np.abs(noisy.reshape(-1, 4).mean(axis=0) - 0.3) < 5 * np.sqrt(want / n))
    # Clipped to the sensor's range like a real frame: black at 0 DN, white at the white level.
    dark = synthesize(np.zeros((64, 64, 4), np.float32), a, b, rng, black_level=[0] * 4, white_level=1023)
    assert dark.min() == 0 and np.allclose(dark * 1023, np.rint(dark * 1023), atol=1e-3)


def test_synthetic_examples_use_the_law_over_the_sensor_iso_range(learn):
    pipe = Pipeline(FrameStore(learn["store"]), learn["pairs"], learn["noise"], crop=32, batch_size=16,
                    synthetic_fraction=1.0, workers=0)  # fmt: skip
    b = pipe.batch(3)
    assert b["synthetic"].all()
    for iso, a, s in zip(b["iso"], b["a"], b["sensor_idx"], strict=True):
        noise = learn["noise"][pipe.sensors[s]]
        lo, hi = noise.iso_range
        assert lo <= iso <= hi
        np.testing.assert_allclose(a.ravel(), noise.params(iso)[0], rtol=1e-5)
    assert len(set(b["iso"].tolist())) > 8  # drawn over the range, not the profiled ISOs only
    # Without a law, only the profiled ISOs are drawn.
    prof = SensorProfile(
        "S", "paired", [ISOProfile(100, [1e-4] * 4, [1e-6] * 4), ISOProfile(800, [8e-4] * 4, [3e-6] * 4)]
    )
    s = SensorNoise(prof)
    rng = np.random.default_rng(0)
    assert {s.sample_iso(rng) for _ in range(50)} == {100.0, 800.0}
    assert s.params(200)[0][0] == 1e-4 and s.params(600)[0][0] == 8e-4


def test_batches_depend_on_the_seed_and_step_only(learn):
    def pipe(**kw):
        return Pipeline(FrameStore(learn["store"]), learn["pairs"], learn["noise"], crop=32, batch_size=4,
                        synthetic_fraction=0.5, **kw)  # fmt: skip

    serial = [b for _, b in pipe(workers=0).batches(0, 6)]
    threaded = list(pipe(workers=3, prefetch=5, cache_mb=0).batches(0, 6))
    assert [k for k, _ in threaded] == list(range(6))
    for a, (_, b) in zip(serial, threaded, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert any(b["synthetic"].any() for b in serial) and any((~b["synthetic"]).any() for b in serial)
    resumed = next(pipe(workers=2).batches(4))  # starting at step 4 gives batch 4
    assert resumed[0] == 4
    np.testing.assert_array_equal(resumed[1]["noisy"], serial[4]["noisy"])
    other = pipe(workers=0, seed=1).batch(0)
    assert not np.array_equal(other["noisy"], serial[0]["noisy"])


def _counting_store(inner):
    """``inner`` wrapped so that every key read is recorded in ``.keys`` (shared by read-only copies)."""
    from zarr.storage import WrapperStore

    class Counting(WrapperStore):
        keys: list[str] = []  # noqa: RUF012 - one list for the class: zarr re-wraps the store when opening

        async def get(self, key, prototype, byte_range=None):
            self.keys.append(key)
            return await self._store.get(key, prototype, byte_range)

    return Counting(inner)


def test_crops_read_only_the_chunks_under_the_window(tmp_path):
    fstore = FrameStore(tmp_path / "s.zarr")
    fstore.initialise({})
    planes = np.random.default_rng(0).integers(0, 4096, (4, 600, 700)).astype(np.uint16)
    fstore.write_frame("f", planes, {})
    fstore._zstore = _counting_store(fstore.zstore)
    reader = ChunkReader(fstore, cache_mb=64)
    reader.array("f")  # metadata
    fstore.zstore.keys.clear()
    out = reader.read("f", 250, 10, 33)  # rows 250..282 cross the chunk boundary at 256; columns do not
    np.testing.assert_array_equal(out, planes[:, 250:283, 10:43])
    assert sorted(fstore.zstore.keys) == ["frames/f/raw/c/0/0/0", "frames/f/raw/c/0/1/0"]
    fstore.zstore.keys.clear()
    np.testing.assert_array_equal(reader.read("f", 260, 20, 33), planes[:, 260:293, 20:53])
    assert fstore.zstore.keys == []  # decoded chunks are cached
    assert reader.stats == {"hits": 1, "misses": 2}
    np.testing.assert_array_equal(reader.read("f", 567, 667, 33), planes[:, 567:600, 667:700])  # edge chunk
    nocache = ChunkReader(fstore, cache_mb=0)
    nocache.read("f", 0, 0, 33)
    nocache.read("f", 0, 0, 33)
    assert nocache.stats["misses"] == 2


def test_pipeline_rejects_crops_larger_than_the_frames(learn):
    with pytest.raises(RawlabError, match=r"lower data\.crop"):
        Pipeline(FrameStore(learn["store"]), learn["pairs"], learn["noise"], crop=96, batch_size=2)


def test_configs_load_by_name_and_file_and_reject_typos(tmp_path):
    from rawlab.learn.configs import NAMES, load_config

    for name in NAMES:
        cfg = load_config(name)
        assert cfg["name"] == name and cfg["model"]["arch"] == (
            "mobile" if name in ("builtin", "r2r", "sure") else name
        )
    cfg = load_config("tiny", steps=7, data__batch_size=2, seed=None)
    assert cfg["steps"] == 7 and cfg["data"]["batch_size"] == 2 and cfg["seed"] == 0
    f = tmp_path / "mine.py"
    f.write_text(
        "def get_config():\n    return {'name': 'mine', 'model': {'arch': 'mobile'}, 'data': {'crop': 96}}\n"
    )
    cfg = load_config(str(f))
    assert cfg["name"] == "mine" and cfg["data"]["crop"] == 96 and cfg["data"]["batch_size"] == 8
    # A crop the deepest level would see whole (mobile: 1/16 scale, a 5x5 context) is refused: a mobile model
    # trained on 32-px crops improved on crops and fell 10-28 dB below its input on whole frames.
    with pytest.raises(RawlabError, match=r"data.crop 32 is too small .* use data.crop >= 96"):
        load_config("mobile", data__crop=32)
    assert load_config("tiny", data__crop=16)["data"]["crop"] == 16  # 3 levels: 1/4 scale, 4 px > 3x3
    f.write_text("def get_config():\n    return {'dta': {}}\n")
    with pytest.raises(RawlabError, match="unknown config key 'dta'"):
        load_config(str(f))
    f.write_text("def get_config():\n    return {'data': {'crop': 30}}\n")
    with pytest.raises(RawlabError, match="multiple of 4"):
        load_config(str(f))
    with pytest.raises(RawlabError, match="unknown config 'huge'"):
        load_config("huge")


def test_a_derived_training_store_has_small_chunks_and_gives_the_same_batches(learn, tmp_path):
    import zarr

    from rawlab.learn.trainstore import derive_training_store

    source = FrameStore(learn["store"])
    needed = {fid for p in learn["pairs"] for fid in (p.frame_id, p.ref_id)}
    small = derive_training_store(source, needed, tmp_path / "train.zarr", 32)
    assert set(small.list_frames()) == needed
    for fid in sorted(needed)[:3]:  # pixels bit-identical, rechunked
        np.testing.assert_array_equal(small.read_frame(fid), source.read_frame(fid))
        arr = zarr.open_array(small.zstore, path=f"frames/{fid}/raw", mode="r")
        assert arr.chunks == (4, 32, 32)

    def batches(fstore):
        pipe = Pipeline(fstore, learn["pairs"], learn["noise"], crop=32, batch_size=4, synthetic_fraction=0.5,
                        workers=0, cache_mb=0)  # fmt: skip
        return [b for _, b in pipe.batches(0, 3)]

    for a, b in zip(batches(source), batches(small), strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])

    # Incremental: a second derivation copies nothing; a frame with other chunks is rewritten.
    before = {fid: attrs["row"] for fid, attrs in small.list_frames().items()}
    again = derive_training_store(source, needed, tmp_path / "train.zarr", 32, echo=pytest.fail)
    assert {fid: attrs["row"] for fid, attrs in again.list_frames().items()} == before
    notes = []
    derive_training_store(source, needed, tmp_path / "train.zarr", 64, echo=notes.append)
    assert notes and f"copying {len(needed)} frames" in notes[0]


def test_procedural_examples_mix_in_with_their_own_sensors_and_noise(learn):
    """Procedural examples (rawlab.learn.procedural) join the store's at the requested share, each with its
    drawn (a, b): the residual noisy - clean has the variance the law gives (clipping aside), and batches stay
    pure functions of (seed, step)."""
    from rawlab.learn.procedural import SENSOR, ProceduralSource

    def pipe(fraction):
        src = ProceduralSource(32, seed=3, pool=4, reuse=2, scene_size=128)
        return Pipeline(FrameStore(learn["store"]), learn["pairs"], learn["noise"], crop=32, batch_size=16,
                        seed=3, procedural=src, procedural_fraction=fraction, workers=0)  # fmt: skip

    mixed = pipe(0.5)
    assert mixed.sensors[-1] == SENSOR
    batches = [mixed.batch(k) for k in range(6)]
    share = np.mean([b["sensor_idx"] == len(mixed.sensors) - 1 for b in batches])
    # 96 draws of a fair coin: 4 binomial sigmas is 0.2
    assert abs(share - 0.5) < 4 * np.sqrt(0.25 / 96)
    again = pipe(0.5).batch(4)
    for key in ("noisy", "clean", "a", "b", "sensor_idx"):
        np.testing.assert_array_equal(again[key], batches[4][key])

    only = [pipe(1.0).batch(k) for k in range(3)]
    noisy, clean = np.concatenate([b["noisy"] for b in only]), np.concatenate([b["clean"] for b in only])
    a, b = np.concatenate([b["a"] for b in only]), np.concatenate([b["b"] for b in only])
    assert noisy.shape == clean.shape == (48, 32, 32, 4) and np.all(np.isfinite(noisy))
    assert clean.min() >= 0 and clean.max() <= 1  # the scene as recorded: clipped at white
    # Away from clipping (clean more than 4 sigma inside [0, 1]), E[(noisy - clean)^2] = a * clean + b (b
    # includes the rounding to whole DN). The ratio of sums over >10^4 samples has a relative sampling error
    # under 3 sqrt(2 / 10^4) = 4% (each term's CV is sqrt(2) for Gaussian noise).
    var = np.broadcast_to(a * clean + b, clean.shape)
    ok = (clean - 4 * np.sqrt(var) > 0) & (clean + 4 * np.sqrt(var) < 1)
    ratio = ((noisy - clean) ** 2)[ok].sum() / var[ok].sum()
    assert ok.sum() > 10_000 and abs(ratio - 1) < 0.05, (ok.sum(), ratio)
    # the drawn sensors span decades of noise, not one law
    assert a[:, 0, 0, 1].max() / a[:, 0, 0, 1].min() > 10


def test_procedural_a_range_bounds_the_random_sensors_noise():
    """data.procedural.a_range: every example's shot-noise term lies in the range asked for (per channel the
    drawn a times the sensor's channel spread, 0.95 to 1.05), and a bad range is refused by the config."""
    from rawlab.learn.configs import load_config
    from rawlab.learn.procedural import ProceduralSource

    src = ProceduralSource(32, seed=5, pool=2, reuse=2, scene_size=128, a_range=(1e-3, 2e-3))
    rng = np.random.default_rng(0)
    a = np.array([src.example(rng, k)["a"] for k in range(40)])
    assert a.min() >= 1e-3 * 0.95 and a.max() <= 2e-3 * 1.05
    wide = np.array([ProceduralSource(32, seed=5, scene_size=128).example(rng, k)["a"] for k in range(40)])
    assert wide.min() < 1e-3 * 0.95 or wide.max() > 2e-3 * 1.05  # the default range is wider
    assert load_config("tiny", data__procedural__a_range=[1e-4, 5e-2])["data"]["procedural"]["a_range"]
    with pytest.raises(RawlabError, match="a_range"):
        load_config("tiny", data__procedural__a_range=[5e-2, 1e-4])
