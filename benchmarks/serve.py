"""`rawlab serve` under load: N concurrent clients send a fixed number of raw files; latency and throughput.

    python benchmarks/serve.py [--model FILE.onnx] [--clients 1,8] [--requests 32] [--size 4000x3000]
                               [--workers 2] [--url http://127.0.0.1:8000]

Starts the service on 127.0.0.1 (a free port, uvicorn in this process, its worker pool as `rawlab serve` runs
it) unless ``--url`` names a running one, writes one synthetic DNG of ``--size`` mosaic pixels (a SynthCam
sensor, so the model's noise law applies when it knows it), then, for each number of clients in ``--clients``,
that many threads post it until ``--requests`` answers have come back. Prints, per number of clients, p50/p95/max
latency, throughput, and each latency split into the job's time in a worker (the ``X-Rawlab-Seconds`` header)
and the rest (waiting for a free worker, upload and answer); and the same file through `rawlab denoise` run
alone (a fresh process, as a user runs it) for the issue's target: p95 within 1.3x of it. With more clients
than workers a request waits for the jobs ahead of it, so end-to-end p95 grows with clients / workers; the
time in a worker says whether the service itself is slower than the command line.
Exits 1 on any error or lost request (an answer that is not a 200 DNG of the input's size).

Without ``--model`` a perturbed ``tiny`` U-Net is exported to ONNX first (needs JAX and onnx).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET_P95_RATIO = 1.3


def _model(tmp: Path) -> Path:
    import jax

    from rawlab.deploy.onnx import export_onnx
    from rawlab.learn.modelio import init_model, save_model

    m = init_model({"model": {"arch": "tiny"}})
    rng = np.random.default_rng(0)
    m.params = jax.tree.map(
        lambda p: (np.asarray(p) + 0.05 * rng.standard_normal(p.shape)).astype(p.dtype), m.params
    )
    save_model(tmp / "tiny", m)
    export_onnx(tmp / "tiny", tmp / "tiny.onnx", n_eval=1)
    return tmp / "tiny.onnx"


def _dng(tmp: Path, width: int, height: int) -> Path:
    from rawlab.synth import write_dataset

    write_dataset(tmp / "data", seed=0, size=(width, height), n_sensors=1, n_scenes=1)
    return sorted((tmp / "data").rglob("*.dng"))[-1]  # the highest ISO: the noisiest file


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--clients", default="1,8", help="comma-separated numbers of concurrent clients")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT of the mosaic (default: 12 MP)")
    ap.add_argument("--workers", type=int, default=None, help="service workers (default: rawlab serve's)")
    ap.add_argument("--url", default=None, help="a running service (default: start one here)")
    args = ap.parse_args()
    try:
        counts = [int(v) for v in str(args.clients).split(",")]
    except ValueError:
        ap.error("--clients takes comma-separated integers, e.g. 1,8")
    if min(counts) < 1 or args.requests < 1:
        ap.error("--clients and --requests must be at least 1")

    tmp = Path(tempfile.mkdtemp(prefix="rawlab-bench-serve-"))
    model = Path(args.model) if args.model else _model(tmp)
    w, h = (int(v) for v in args.size.lower().split("x"))
    src = _dng(tmp, w, h)
    data = src.read_bytes()
    print(f"file: {src.name} ({w}x{h}, {len(data) / 1e6:.1f} MB); model {model.name}")

    # the same file through `rawlab denoise`, alone, as a user runs it
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "rawlab", "denoise", str(src), "--model", str(model),
                          "--out", str(tmp / "alone")], capture_output=True, text=True)  # fmt: skip
    alone = time.perf_counter() - t0
    if res.returncode != 0:
        print(res.stderr)
        return 1

    server = None
    url = args.url
    if url is None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from test_serve import Server  # the tests' uvicorn-in-a-thread on a free loopback port

        from rawlab.serve import build_config

        config = build_config([str(model)], workers=args.workers, tmp_root=str(tmp / "svc"),
                              max_queue=max(16, *counts))  # fmt: skip
        server = Server(config)
        url = server.url
        print(f"service: {url}, {config.workers} workers x {config.num_threads} threads")

    failed = False
    try:
        for n in counts:
            failed |= _load(url, src.name, data, n, args.requests, w * h, alone)
    finally:
        if server is not None:
            server.close()
    return 1 if failed else 0


def _p(values: list[float], k: int) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[k - 1]


def _load(url: str, name: str, data: bytes, clients: int, requests: int, pixels: int, alone: float) -> bool:
    """``clients`` threads post ``data`` until ``requests`` answers are back; prints the figures; True on failure."""
    import threading

    import httpx

    lock = threading.Lock()
    issued = [0]
    latencies: list[float] = []
    work: list[float] = []  # the job's seconds in a worker (X-Rawlab-Seconds)
    errors: list[str] = []

    def client() -> None:
        with httpx.Client(timeout=600) as c:
            while True:
                with lock:
                    if issued[0] >= requests:
                        return
                    issued[0] += 1
                t = time.perf_counter()
                try:
                    r = c.post(f"{url}/denoise", files={"file": (name, data)})
                except httpx.HTTPError as e:
                    errors.append(f"{type(e).__name__}: {e}")
                    continue
                dt = time.perf_counter() - t
                if r.status_code != 200 or r.content[:4] not in (b"II*\x00", b"MM\x00*"):
                    errors.append(f"{r.status_code}: {r.text[:200]}")
                    continue
                latencies.append(dt)
                work.append(float(r.headers.get("X-Rawlab-Seconds", "nan")))

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as ex:
        for f in [ex.submit(client) for _ in range(clients)]:
            f.result()
    wall = time.perf_counter() - t0
    lost = requests - len(latencies) - len(errors)
    p50, p95 = _p(latencies, 50), _p(latencies, 95)
    rest = [a - b for a, b in zip(latencies, work, strict=True)]
    print(
        f"{clients} clients, {requests} requests: {len(latencies)} ok, {len(errors)} errors, {lost} lost; "
        f"latency p50 {p50:.2f} s, p95 {p95:.2f} s, max {max(latencies, default=float('nan')):.2f} s; "
        f"throughput {len(latencies) / wall:.2f} files/s ({len(latencies) * pixels / 1e6 / wall:.1f} MP/s)\n"
        f"  in a worker p50 {_p(work, 50):.2f} s, p95 {_p(work, 95):.2f} s; waiting, upload and answer p50 "
        f"{_p(rest, 50):.2f} s, p95 {_p(rest, 95):.2f} s\n"
        f"  `rawlab denoise` alone on the same file: {alone:.2f} s; p95 / alone = {p95 / alone:.2f} "
        f"(target <= {TARGET_P95_RATIO}: {'met' if p95 / alone <= TARGET_P95_RATIO else 'MISSED'}); "
        f"in-worker p95 / alone = {_p(work, 95) / alone:.2f}",
        flush=True,
    )
    for e in errors[:5]:
        print("  error:", e)
    return bool(errors or lost)


if __name__ == "__main__":
    sys.exit(main())
