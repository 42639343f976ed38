"""The distribution as users get it: a built wheel that imports and runs, and a pinned public API."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import recursa

ROOT = Path(__file__).resolve().parents[1]

PUBLIC_API = [
    "Budget", "CacheStats", "CodeExecuted", "Completion", "Context", "ContextError", "ContextTooLargeError",
    "default_lm", "Event", "HasWindow", "IterationStarted", "LM", "LMCache", "LMCalled", "LMConnectionError", "LMError",
    "LMResponseError", "LMTimeoutError", "load_context", "LocalLlama", "Message", "ModelInstallError",
    "ModelNotFoundError", "Notice", "OpenAIChat", "PathNotAllowedError", "Price", "PromptTemplates", "read_trace",
    "RecursaError", "ReplSandbox", "Result", "RLM", "RunFinished", "RunStarted", "RunStream", "SandboxError",
    "SandboxLimits", "ScriptedLM", "Session", "SubCallsStarted", "TakesGrammar", "TraceFormatError", "Usage",
]


def test_public_api_is_pinned() -> None:
    assert sorted(recursa.__all__, key=str.casefold) == sorted(PUBLIC_API, key=str.casefold)
    for name in recursa.__all__:
        assert getattr(recursa, name) is not None


def test_import_needs_no_framework() -> None:
    """`import recursa` and a scripted run work with every optional framework made unimportable."""
    blocker = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'langgraph', 'langchain', 'langchain_core', 'llama_index', 'mcp',"
        " 'llama_cpp', 'matplotlib', 'starlette', 'uvicorn'}:\n"
        "            raise ImportError(f'blocked {name}')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import recursa\n"
        "root = recursa.ScriptedLM(['```repl\\nprint(len(context))\\n```', 'FINAL(ok)'])\n"
        "print(recursa.RLM(root).run('q', 'abc').answer)\n"
        "try:\n"
        "    import recursa.integrations.langgraph\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
        "import recursa.cli\n"
        "try:\n"
        "    import recursa.serve\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "ok"
    assert "pip install 'recursa[langgraph]'" in lines[1]
    assert "pip install 'recursa[serve]'" in lines[2]


@pytest.mark.slow
def test_built_wheel_imports_and_runs(tmp_path: Path) -> None:
    """Build the wheel, install it alone into a directory, and run the real loop and CLI from it."""
    dist = tmp_path / "dist"
    source = clean_copy(tmp_path)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(source)],
                   check=True, timeout=600, capture_output=True)
    wheel = next(dist.glob("recursa-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in ("recursa/__init__.py", "recursa/prompts/rlm.md", "recursa/sandbox/_worker/__main__.py",
                     "recursa/integrations/langgraph.py", "recursa/integrations/llamaindex.py",
                     "recursa/mcp_server/__init__.py", "recursa/serve/__init__.py", "recursa/bench/sniah.py",
                     "recursa/viewer/page.html", "recursa/viewer/page.css", "recursa/viewer/page.js",
                     "recursa/py.typed"):
        assert expected in names, f"{expected} missing from {wheel.name}"
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, timeout=300, capture_output=True)
    script = (
        "import recursa, sys\n"
        f"assert recursa.__file__.startswith({str(target)!r}), recursa.__file__\n"
        "root = recursa.ScriptedLM(['```repl\\nx = context.upper()\\nprint(x)\\n```', 'FINAL_VAR(x)'])\n"
        "print(recursa.RLM(root).run('q', 'wheel').answer)\n"
        "from recursa.cli import main\n"
        "sys.argv = ['recursa', '--help']\n"
        "main()\n"
    )
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "WHEEL"
    assert "ask" in proc.stdout and "mcp" in proc.stdout


def clean_copy(tmp_path: Path) -> Path:
    """The files a build reads, copied without the checkout's build/ and egg-info: setuptools builds in the
    source tree and would put a module left in a stale build/lib into the wheel after it was deleted."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    package_dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for top in {Path(d).parts[0] for d in package_dirs.values()}:
        shutil.copytree(ROOT / top, source / top, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return source
