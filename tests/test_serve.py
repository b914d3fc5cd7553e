"""`rawlab serve`: a real uvicorn on the loopback interface, a real HTTP client (httpx), real worker processes
running an ONNX model on real DNGs; bad uploads answered 4xx with the reason; the loop stays free while jobs run;
time and size limits; nothing written outside the service's temporary folder."""

from __future__ import annotations

import concurrent.futures
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")
pytest.importorskip("uvicorn", reason="the serve extra is not installed")
httpx = pytest.importorskip("httpx", reason="the serve extra (httpx) is not installed")
pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")

TILE = {"size": 64, "overlap": 16}


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory, small_synth):
    import jax

    from rawlab.deploy.onnx import export_onnx
    from rawlab.learn.modelio import init_model, save_model
    from rawlab.noise.profile import load_profiles

    noise = load_profiles(small_synth.truth_path).to_dict()
    noise["sensors"] = noise["sensors"][:1]  # knows SynthCam PG-1 only
    m = init_model({"model": {"arch": "tiny"}, "tile": TILE, "noise": noise})
    rng = np.random.default_rng(5)
    m.params = jax.tree.map(
        lambda p: (np.asarray(p) + 0.05 * rng.standard_normal(p.shape)).astype(p.dtype), m.params
    )
    d = tmp_path_factory.mktemp("serve-model")
    save_model(d / "tiny", m)
    export_onnx(d / "tiny", d / "tiny.onnx", n_eval=1)
    return d / "tiny.onnx"


class Server:
    """uvicorn in a thread on 127.0.0.1 and a free port (a socket bound here and handed to uvicorn)."""

    def __init__(self, config):
        import uvicorn

        from rawlab.serve.app import create_app

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.app = create_app(config)
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        for _ in range(1200):  # workers spawn and load the model: up to 120 s on a loaded machine
            if self.server.started or not self.thread.is_alive():
                break
            time.sleep(0.1)
        assert self.server.started, "uvicorn did not start"

    def close(self):
        self.server.should_exit = True
        self.thread.join(timeout=60)
        self.sock.close()
        assert not self.thread.is_alive()


def _config(model, tmp, **kw):
    from rawlab.serve import build_config

    return build_config([str(model)], tmp_root=str(tmp), **kw)


@pytest.fixture(scope="module")
def server(onnx_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("svc") / "tmp"
    srv = Server(_config(onnx_model, tmp, workers=2, max_upload_mb=48, job_timeout=120))
    srv.tmp = tmp
    yield srv
    srv.close()
    assert not any(tmp.iterdir())  # the service's folder is removed on shutdown


@pytest.fixture(scope="module")
def dng(small_synth):
    return sorted((small_synth.out / "SynthCam_PG-1").rglob("*.dng"))[0]


def _post(url, data: bytes, name="photo.dng", params=None, timeout=120):
    return httpx.post(f"{url}/denoise", files={"file": (name, data)}, params=params, timeout=timeout)


def test_health_and_models(server):
    h = httpx.get(f"{server.url}/health", timeout=10)
    assert h.status_code == 200 and h.json()["status"] == "ok" and h.json()["workers"] == 2
    m = httpx.get(f"{server.url}/models", timeout=10).json()
    assert m["default"] == "tiny"
    (desc,) = m["models"]
    assert desc["kind"] == "onnx" and desc["tile"] == TILE and desc["sensors"] == ["SynthCam PG-1"]


def test_denoise_returns_the_same_dng_as_the_cli(server, onnx_model, dng, tmp_path):
    from rawlab.deploy.denoise import denoise_files
    from rawlab.rawio import read_raw

    r = _post(server.url, dng.read_bytes(), name=dng.name)
    assert r.status_code == 200, r.text
    assert r.headers["x-rawlab-noise-source"] == "model law" and r.headers["x-rawlab-model"] == "tiny"
    w_net, w_nlm = (float(part.split()[1]) for part in r.headers["x-rawlab-fusion"].split(", "))
    assert 0 <= w_net <= 1 and 0 <= w_nlm <= 1 and w_net + w_nlm <= 1.001  # on the simplex (3 decimals)
    assert r.headers["content-disposition"] == f'attachment; filename="{dng.stem}-denoised.dng"'
    got = tmp_path / "got.dng"
    got.write_bytes(r.content)
    assert denoise_files([str(dng)], str(onnx_model), tmp_path / "cli").n_ok == 1
    (want,) = (tmp_path / "cli").rglob("*.dng")
    np.testing.assert_array_equal(read_raw(str(got)).mosaic, read_raw(str(want)).mosaic)
    for fmt, magic in (("png", b"\x89PNG"), ("tiff", (b"II*\x00", b"MM\x00*"))):
        r = _post(server.url, dng.read_bytes(), params={"format": fmt})
        assert r.status_code == 200 and r.content[:4] in (magic if isinstance(magic, tuple) else (magic,))
        assert r.headers["content-type"] == f"image/{fmt}"


def test_bad_uploads_are_4xx_with_the_reason(server, dng, tmp_path):
    data = dng.read_bytes()
    png = b"\x89PNG\r\n\x1a\n" + bytes(2000)
    rng = np.random.default_rng(0)
    cases = {
        "empty": (b"", "x.dng", 400, "empty"),
        "truncated": (data[:3000], "x.dng", 422, "cannot denoise"),
        "png": (png, "x.png", 415, "PNG"),
        "40 MB non-raw": (rng.integers(0, 256, 40 * 2**20, dtype=np.uint8).tobytes(), "big.dng", None, None),
        "traversal, junk": (b"hello world\n" * 10, "../../../etc/passwd", 415, "not a camera raw"),
    }
    for label, (body, name, status, needle) in cases.items():
        r = _post(server.url, body, name=name)
        assert 400 <= r.status_code < 500, (label, r.status_code, r.text)
        assert status is None or r.status_code == status, (label, r.status_code, r.text)
        detail = r.json()["detail"]
        assert needle is None or needle in detail, (label, detail)
        assert "Traceback" not in r.text
    r = httpx.post(f"{server.url}/denoise", data={"file": "text"}, timeout=10)  # a form without a file part
    assert r.status_code == 400 and "field named 'file'" in r.json()["detail"]
    r = httpx.post(f"{server.url}/denoise", content=data, timeout=10)  # not multipart at all
    assert r.status_code == 400 and "multipart" in r.json()["detail"]
    assert _post(server.url, data, params={"format": "jpeg"}).status_code == 400
    assert _post(server.url, data, params={"model": "nope"}).status_code == 404


def test_a_path_traversal_name_never_becomes_a_path(server, dng, tmp_path):
    root = Path(server.tmp)
    before = {p for p in root.parent.rglob("*")}
    r = _post(server.url, dng.read_bytes(), name="../../../escape..dng")
    assert r.status_code == 200
    assert r.headers["content-disposition"] == 'attachment; filename="escape-denoised.dng"'
    after = {p for p in root.parent.rglob("*")}
    assert after == before  # nothing left behind, nothing written beside the service's folder
    assert not any("escape" in p.name for p in root.parents[1].rglob("*"))


@pytest.mark.samples
def test_non_bayer_samples_are_422_with_the_reason(server, samples_dir):
    for path in sorted((samples_dir / "non-bayer").iterdir()):
        r = _post(server.url, path.read_bytes(), name=path.name)
        assert r.status_code in (415, 422), (path.name, r.status_code, r.text)
        assert r.json()["detail"] and "Traceback" not in r.text


def _big_dng(src: Path, out: Path, reps: int) -> Path:
    """``src``'s mosaic tiled ``reps`` x ``reps`` into a larger DNG of the same camera (its noise law applies)."""
    from rawlab.dng import write_dng
    from rawlab.rawio import read_raw

    f = read_raw(str(src))
    i = f.info
    write_dng(out, np.tile(f.mosaic, (reps, reps)), cfa=i.cfa, black_level=list(i.black_level),
              white_level=i.white_level, make=i.make, model=i.model, iso=i.iso)  # fmt: skip
    return out


def test_health_answers_while_jobs_run_and_concurrent_jobs_all_succeed(server, dng, tmp_path):
    big = _big_dng(dng, tmp_path / "big.dng", 12).read_bytes()  # 1536 x 1152: a second or more per job
    small = dng.read_bytes()
    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        jobs = [ex.submit(_post, server.url, big)] + [ex.submit(_post, server.url, small) for _ in range(4)]
        latencies, seen_busy = [], False
        for _ in range(3000):  # bounded: at most ~60 s of polling
            t0 = time.perf_counter()
            h = httpx.get(f"{server.url}/health", timeout=10).json()
            latencies.append(time.perf_counter() - t0)
            seen_busy |= h["busy"] >= 1
            if all(j.done() for j in jobs):
                break
            time.sleep(0.01)
        results = [j.result() for j in jobs]
    assert seen_busy
    assert max(latencies) < 1.0, max(latencies)  # the event loop never waited for a job
    assert [r.status_code for r in results] == [200] * 5
    assert len({r.content for r in results[1:]}) == 1  # the same input gives the same output


def test_time_and_size_limits(onnx_model, dng, tmp_path):
    """A job past the time limit is 504 and its worker replaced; an upload over the limit is 413."""
    srv = Server(_config(onnx_model, tmp_path / "tmp", workers=1, max_upload_mb=1, job_timeout=0.001))
    try:
        r = _post(srv.url, dng.read_bytes())
        assert r.status_code == 504 and "limit" in r.json()["detail"]
        r = _post(srv.url, bytes(3 * 2**20))
        assert r.status_code == 413 and "larger" in r.json()["detail"]
        h = httpx.get(f"{srv.url}/health", timeout=10).json()
        assert h["restarts"] == 1 and h["busy"] == 0
    finally:
        srv.close()
