"""render-objaverse's issue-11 options as a user types them: one-line errors, exit 2, nothing written."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("args, message", [
    (["--source", "builtin", "--retry-failed"], "--retry-failed needs the existing store"),
    (["--source", "builtin", "--license", "CC0"], "--source objaverse-xl"),
    (["--source", "builtin", "--min-coverage", "1.5"], "--min-coverage"),
    (["--source", "builtin", "--normalise", "sphere"], "--normalise"),
])
def test_bad_options_are_one_line_exit_2(tmp_path, args, message):
    r = subprocess.run([sys.executable, str(ROOT / "cli.py"), "render-objaverse", *args, "--out",
                        str(tmp_path / "o.zarr"), "--no-progress"], capture_output=True, text=True, timeout=120,
                       cwd=ROOT)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and message in lines[0], r.stderr
    assert not (tmp_path / "o.zarr").exists()
