"""The embedded local model (``LocalLlama``) against the real Qwen2.5-Coder-1.5B GGUF.

Tests marked ``local_model`` load the model (a few seconds, ~1 GB of memory) and need ``recursa[local]``;
they are skipped, with the reason, when llama-cpp-python or the model's part packages are missing.
"""

from __future__ import annotations

import importlib.util
import os
import time

import anyio
import pytest
from recursa._exceptions import LMError, ModelInstallError
from recursa._model_store import EMBEDDED_MODEL, model_path

HAVE_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
HAVE_MODEL = importlib.util.find_spec(EMBEDDED_MODEL.parts[0].package) is not None or model_path().is_file()

needs_llama_cpp = pytest.mark.skipif(
    not HAVE_LLAMA_CPP, reason="llama-cpp-python is not installed (pip install 'recursa[local]')"
)
local_model = [
    pytest.mark.local_model,
    needs_llama_cpp,
    pytest.mark.skipif(not HAVE_MODEL, reason="the model's part packages are not installed (recursa[local])"),
    pytest.mark.anyio,
]

ASK_SUM = [{"role": "user", "content": "What is 2 + 3? Reply with the number only."}]


@pytest.fixture(scope="module")
def lm():
    from recursa._local import LocalLlama

    model = LocalLlama()
    model.load()
    return model


@pytest.mark.parametrize("bad", [{"max_tokens": 8192}, {"max_tokens": 9000, "n_ctx": 8192}])
@needs_llama_cpp
def test_max_tokens_must_leave_room_for_a_prompt(bad):
    from recursa._local import LocalLlama

    with pytest.raises(ValueError, match="max_tokens"):
        LocalLlama(**bad)


def test_missing_llama_cpp_names_the_install_command(monkeypatch: pytest.MonkeyPatch):
    from recursa import _local

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else real(name, *a))
    with pytest.raises(ImportError, match=r"CMAKE_ARGS=.*-DGGML_NATIVE=OFF.*pip install .*'recursa\[local\]'"):
        _local.LocalLlama()


def test_threads_default_to_the_usable_physical_cores():
    from recursa._local import _available_cores

    assert 1 <= _available_cores() <= len(os.sched_getaffinity(0))


@needs_llama_cpp
@pytest.mark.anyio
async def test_giant_prompt_is_refused_before_loading_anything():
    from recursa._local import LocalLlama

    lm = LocalLlama(model_path="/nonexistent/model.gguf")  # never loaded: the check comes first
    with pytest.raises(LMError, match=r"Prompt too long .* 2,000,000 characters.*split the text"):
        await lm.complete([{"role": "user", "content": "x" * 2_000_000}])


@needs_llama_cpp
@pytest.mark.anyio
async def test_unsupported_parameters_are_a_type_error():
    from recursa._local import LocalLlama

    with pytest.raises(TypeError, match="unsupported parameters: frequency"):
        await LocalLlama().complete(ASK_SUM, frequency=1)


@needs_llama_cpp
def test_a_crashing_build_is_reported_with_the_rebuild_command(monkeypatch: pytest.MonkeyPatch, tmp_path):
    from recursa import _local

    monkeypatch.setenv("RECURSA_HOME", str(tmp_path))
    monkeypatch.setattr(_local, "_SMOKE_TEST", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    with pytest.raises(ModelInstallError, match=r"crashed \(SIGSEGV\).*CMAKE_ARGS=.*--force-reinstall"):
        _local._check_build(tmp_path / "model.gguf")
    monkeypatch.setattr(_local, "_SMOKE_TEST", "pass")
    _local._check_build(tmp_path / "model.gguf")
    monkeypatch.setattr(_local, "_SMOKE_TEST", "raise SystemExit(3)")
    _local._check_build(tmp_path / "model.gguf")  # the passing build is remembered: not run again


# -- with the real model ----------------------------------------------------------------------------


class TestWithModel:
    pytestmark = local_model

    async def test_round_trip(self, lm):
        completion = await lm.complete(ASK_SUM)
        assert completion.text.strip() == "5"
        assert completion.usage.input_tokens > 10 and completion.usage.output_tokens >= 1
        assert completion.cost_usd == 0.0
        assert completion.model == "qwen2.5-coder-1.5b-instruct"

    async def test_two_instances_share_one_loaded_model(self, lm):
        from recursa._local import _MODELS, LocalLlama

        other = LocalLlama()
        assert (await other.complete(ASK_SUM)).text.strip() == "5"
        assert other._loaded() is lm._loaded()
        assert len([key for key in _MODELS if key[1] == lm.n_ctx]) == 1

    async def test_concurrent_calls_are_serialised(self, lm):
        results: list[str] = []

        async def ask() -> None:
            results.append((await lm.complete(ASK_SUM, max_tokens=4)).text.strip())

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(ask)
        assert results == ["5", "5", "5"]

    async def test_stop_and_max_tokens_pass_through(self, lm):
        count = [{"role": "user", "content": "Count from 1 to 9, separated by commas and spaces."}]
        assert "4" not in (await lm.complete(count, stop=["4"])).text
        assert (await lm.complete(count, max_tokens=3)).usage.output_tokens <= 3

    async def test_prompt_longer_than_the_window_is_a_clear_error(self, lm):
        text = "The quick brown fox jumps over the lazy dog. " * 2000  # ~20K tokens, under the char bound
        with pytest.raises(LMError, match=r"Prompt too long for the local model: [\d,]+ tokens.*8,192-token"):
            await lm.complete([{"role": "user", "content": text}])
        assert (await lm.complete(ASK_SUM)).text.strip() == "5"

    async def test_cancelled_call_releases_the_model_promptly(self, lm):
        long_job = [{"role": "user", "content": "Count from 1 to 1000, one number per line."}]
        with anyio.move_on_after(1.0):
            await lm.complete(long_job)
        started = time.monotonic()
        loaded = lm._loaded()
        assert loaded.lock.acquire(timeout=30)  # stopped at its next token, or stopped waiting for its turn
        loaded.lock.release()
        assert time.monotonic() - started < 30
        assert (await lm.complete(ASK_SUM)).text.strip() == "5"
