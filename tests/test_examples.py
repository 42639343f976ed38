"""The offline examples run as a user would run them, so they cannot rot unnoticed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("script", ["python_api.py", "llamaindex_corpus.py"])
def test_offline_example_runs(script: str, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), "--offline"], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "answer" in proc.stdout.lower()
