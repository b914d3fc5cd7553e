"""The command line as a user runs it: real subprocesses, exit codes, no tracebacks for user errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "rawlab", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_help_lists_every_command_and_imports_nothing_heavy():
    code = (
        "import sys\n"
        "from rawlab.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('rawpy', 'dask', 'jax', 'tensorflow', 'zarr', 'xarray', 'skimage') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out
    for name in ("synth", "catalog", "noise-fit", "stats", "train", "eval", "export", "denoise", "demo"):
        assert name in out
    assert "not built yet" not in out


def test_console_script_and_version():
    exe = os.path.join(os.path.dirname(sys.executable), "rawlab")
    res = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and "rawlab" in res.stdout


def test_train_on_a_missing_store_is_a_usage_error():
    res = run("train", "store.zarr", "--config", "tiny", "--workdir", "w")
    assert res.returncode == 2
    assert "store.zarr" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize(
    "args, needle",
    [
        (["synth", "x", "--size", "12x12"], "at least 16"),
        (["synth", "x", "--size", "big"], "WIDTHxHEIGHT"),
        (["synth", "x", "--sensors", "9"], "--sensors"),
        (["synth"], "Missing argument"),
        (["no-such-command"], "No such command"),
    ],
)
def test_usage_errors_exit_2_without_traceback(args, needle):
    res = run(*args)
    assert res.returncode == 2
    assert needle in res.stderr
    assert "Traceback" not in res.stderr


def test_synth_cli_end_to_end(tmp_path):
    res = run(
        "synth", str(tmp_path / "d"), "--size", "64x48", "--sensors", "1", "--scenes", "2", "--seed", "5"
    )
    assert res.returncode == 0, res.stderr
    summary = res.stdout.strip().splitlines()[-1]
    assert summary.startswith("synth: wrote 14 DNG files")  # 2 scenes x (2 clean + 5 ISOs)
    truth = json.loads((tmp_path / "d" / "truth.json").read_text())
    assert truth["schema"] == "rawlab.noise/1" and truth["generator"]["seed"] == 5


def test_synth_into_a_file_is_a_clear_error(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    res = run("synth", str(target))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
