"""rawlab.outputs: every command's output location is checked, with a real write, before the long work."""

from __future__ import annotations

import pytest

from rawlab.errors import RawlabError
from rawlab.outputs import output_file, output_folder


def test_output_checks_name_the_problem(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(RawlabError, match=r"f is a file, not a folder"):
        output_file(tmp_path / "f" / "deeper" / "noise.json")
    with pytest.raises(RawlabError, match="is a folder; give the path of the file"):
        output_file(tmp_path)
    with pytest.raises(RawlabError, match="is a file; give a folder"):
        output_folder(tmp_path / "f")
    with pytest.raises(RawlabError, match=r"out\.tflite\.json is a folder"):
        (tmp_path / "out.tflite.json").mkdir()
        output_file(tmp_path / "out.tflite", companions=(".json",))
    assert output_folder(tmp_path / "new" / "sub").is_dir()
    assert list((tmp_path / "new" / "sub").iterdir()) == []  # the probe file is gone


def test_a_pseudo_filesystem_is_refused_even_for_root():
    """Permission bits do not stop root; a real write does (``/proc`` takes no new files from anyone)."""
    with pytest.raises(RawlabError, match="/proc"):
        output_folder("/proc/rawlab-out")
