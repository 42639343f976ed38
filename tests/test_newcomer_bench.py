"""benchmarks/newcomer.py: its gold answers are the running code's own values, its scoring tells a right answer
from a wrong one reported as final and from one the run flagged, and a whole run (scripted model) writes the JSON
whose totals it prints."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import re
import sys
from pathlib import Path

import pytest
import recursa
from recursa import Budget, ScriptedLM
from recursa._defaults import DEFAULT_OPENAI_MODEL

REPO = Path(__file__).resolve().parents[1]
PACKAGE = Path(recursa.__file__).parent
_spec = importlib.util.spec_from_file_location("newcomer_bench", REPO / "benchmarks" / "newcomer.py")
assert _spec is not None and _spec.loader is not None
newcomer = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = newcomer  # dataclasses look their module up there
_spec.loader.exec_module(newcomer)


@pytest.fixture(scope="module")
def files() -> dict[str, str]:
    directory = newcomer.package_files(PACKAGE)
    return dict(zip(directory.names, directory.documents, strict=True))


@pytest.fixture(scope="module")
def questions(files: dict[str, str]) -> dict[str, object]:
    return {q.target.name: q for q in newcomer.build_questions(files)}


def _module(where: str):
    rel = where.rsplit(":", 1)[0].removesuffix(".py").removesuffix("/__init__").replace("/", ".")
    return importlib.import_module("recursa" if rel == "__init__" else f"recursa.{rel}")


def test_the_questions_have_the_shapes_a_newcomer_asks(questions):
    assert len(questions) >= 12
    shapes = [q.target.shape for q in questions.values()]
    assert all(shapes.count(shape) >= 3 for shape in newcomer.SHAPES), shapes
    assert sum(q.target.file is not None for q in questions.values()) >= 2
    assert len({q.id for q in questions.values()}) == len(questions)


def test_golds_are_the_values_the_code_runs_with(questions):
    assert questions["Budget.max_iterations"].value == Budget().max_iterations
    assert questions["Budget.timeout_s"].value == Budget().timeout_s
    assert questions["Budget.timeout_s"].scope == "_budget.py"
    assert questions["DEFAULT_OPENAI_MODEL"].value == DEFAULT_OPENAI_MODEL
    run_stream = Path(inspect.getsourcefile(recursa.RunStream))
    assert questions["RunStream"].value == run_stream.relative_to(PACKAGE).as_posix()
    assert questions["read_trace"].value == "_trace.py"
    for q in questions.values():  # every gold against the imported object it describes
        module = _module(q.where)
        if q.target.shape == "constant":
            assert getattr(module, q.target.name) == q.value, q.id
        elif q.target.shape == "default":
            owner, _, name = q.target.name.partition(".")
            assert inspect.signature(getattr(module, owner)).parameters[name].default == q.value, q.id
        else:
            source = Path(inspect.getsourcefile(getattr(module, q.target.name)))
            assert source.relative_to(PACKAGE).as_posix() == q.value, q.id


def test_golds_are_read_from_the_source_each_run(files):
    changed = dict(files)
    changed["_budget.py"] = changed["_budget.py"].replace("max_iterations: int = 30", "max_iterations: int = 1_200")
    assert changed["_budget.py"] != files["_budget.py"]
    target = next(t for t in newcomer.TARGETS if t.name == "Budget.max_iterations")
    [question] = newcomer.build_questions(changed, [target])
    assert (question.gold, question.value) == ("1_200", 1200)
    assert newcomer.is_right(question, "It is 1,200.")

    with pytest.raises(ValueError, match="NO_SUCH_CONSTANT is defined nowhere"):
        newcomer.build_questions(files, [newcomer.Target("constant", "NO_SUCH_CONSTANT", "?")])
    with pytest.raises(ValueError, match="NOBODY is defined in sandbox/_isolation.py, sandbox/_worker/_confine.py"):
        newcomer.build_questions(files, [newcomer.Target("constant", "NOBODY", "?")])


@pytest.mark.parametrize(("name", "answer", "right"), [
    ("Budget.max_iterations", "30", True),
    ("Budget.max_iterations", "The default max_iterations in Budget is 30 turns.", True),
    ("Budget.max_iterations", "29", False),  # issue 11: a number taken from the budget line
    ("Budget.max_iterations", "300", False),
    ("Budget.max_iterations", "_budget.py line 34: max_iterations: int = 30", True),
    ("Budget.max_iterations", None, False),
    ("Budget.timeout_s", "900", True),  # 900.0 in the source: numbers compare as numbers
    ("Budget.timeout_s", "1000", False),
    ("DEFAULT_OPENAI_MODEL", "'gpt-5-mini'", True),
    ("DEFAULT_OPENAI_MODEL", "None", False),
    ("DEFAULT_OPENAI_MODEL", "gpt-5-mini-2", False),
    ("DEFAULT_BASE_WINDOW_CHARS", "400,000 characters", True),
    ("DEFAULT_BASE_WINDOW_CHARS", "400_000", True),
    ("LOCAL_MODEL_NAME", "LOCAL_MODEL_NAME", False),  # the constant's name is not its value
    ("LOCAL_MODEL_NAME", '"local"', True),
    ("RunStream", "core/_loop.py", True),
    ("RunStream", "It is defined in _loop.py and exported from __init__.py.", True),
    ("RunStream", "__init__.py (imported from _loop.py)", False),  # the first file named is the answer
    ("RunStream", "_trace.py", False),
    ("RunStream", "RunStream", False),
])
def test_scoring(questions, files, name, answer, right):
    assert newcomer.is_right(questions[name], answer, list(files)) is right


def test_an_expression_is_right_as_its_value_or_as_written(files):
    target = newcomer.Target("default", "LoadLimits.max_file_bytes", "How big may one file be?")
    [question] = newcomer.build_questions(files, [target])
    assert question.gold == "128 * 2**20"
    assert newcomer.is_right(question, str(128 * 2**20))
    assert newcomer.is_right(question, "max_file_bytes: int = 128 * 2 ** 20")
    assert not newcomer.is_right(question, "128")


def test_a_unique_base_name_names_a_file_in_a_subfolder(files):
    [question] = newcomer.build_questions(files, [newcomer.Target("file", "make_lookup", "?", kind="function")])
    assert question.accept == ("bench/lookup.py", "lookup.py")
    assert newcomer.is_right(question, "lookup.py", list(files))
    assert newcomer.is_right(question, "recursa/bench/lookup.py", list(files))


@pytest.mark.parametrize(("right", "stopped_reason", "grounded", "outcome", "doubted"), [
    (True, "final", True, "right", False),
    (True, "ungrounded", False, "right", True),
    (False, "final", None, "wrong_final", False),
    (False, "final", True, "wrong_final", False),
    (False, "final", False, "flagged", True),
    (False, "ungrounded", False, "flagged", True),
    (False, "max_iterations", None, "flagged", True),
    (False, "error", None, "flagged", True),
])
def test_outcome(right, stopped_reason, grounded, outcome, doubted):
    assert newcomer.outcome(right, stopped_reason, grounded) == outcome
    assert newcomer.doubted(stopped_reason, grounded) is doubted


def _newcomer_model(messages: list[dict]) -> str:
    """A scripted model: right on two questions, wrong and final on one, never answering on two (the last turn
    then answers: wrong on one, right on the other); right on the one-file question only if given one file."""
    text = "\n".join(m["content"] for m in messages)
    question = re.search(r"Question: (.*)", text).group(1)
    if "No more code will run" in messages[-1]["content"]:
        return {"Which file defines the class RunStream?": "FINAL(_trace.py)",
                "Which file defines the function read_trace?": "FINAL(core/_trace.py)"}[question]
    if not any(m["role"] == "assistant" for m in messages) or "RunStream" in question or "read_trace" in question:
        return f"```repl\nprint(len(context), {len(messages)})\n```"
    if "timeout_s" in question:
        return f"FINAL({Budget().timeout_s if '`context` is one string' in text else 0})"
    if "max_iterations" in question:
        return f"FINAL({Budget().max_iterations})"
    return "FINAL(None)"


def test_a_whole_run_writes_every_question_and_the_totals(tmp_path, capsys):
    out = tmp_path / "newcomer.json"
    only = "Budget.max_iterations,Budget.timeout_s,DEFAULT_OPENAI_MODEL,RunStream,read_trace"
    report = newcomer.main(["--only", only, "--max-iterations", "2", "--out", str(out),
                            "--trace-dir", str(tmp_path / "traces")], lm=ScriptedLM(_newcomer_model))

    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert report["complete"] is True and report["cache"] is False and report["max_iterations"] == 2
    rows = {row["id"]: row for row in report["questions"]}
    assert {i: (row["outcome"], row["stopped_reason"], row["answer"]) for i, row in rows.items()} == {
        "default:Budget.max_iterations": ("right", "final", "30"),
        "default:Budget.timeout_s@_budget.py": ("right", "final", "900.0"),
        "constant:DEFAULT_OPENAI_MODEL": ("wrong_final", "final", "None"),
        "file:RunStream": ("flagged", "max_iterations", "_trace.py"),
        "file:read_trace": ("right", "max_iterations", "core/_trace.py"),
    }
    assert rows["default:Budget.timeout_s@_budget.py"]["scope"] == "_budget.py"
    assert rows["constant:DEFAULT_OPENAI_MODEL"]["gold"] == f'"{DEFAULT_OPENAI_MODEL}"'
    assert all(Path(row["trace"]).exists() and row["seconds"] >= 0 for row in rows.values())
    totals = report["totals"]
    assert {k: totals[k] for k in ("questions", "right", "wrong_final", "flagged", "right_doubted")} == {
        "questions": 5, "right": 3, "wrong_final": 1, "flagged": 1, "right_doubted": 1}
    assert totals["by_shape"]["file"] == {"questions": 2, "right": 1, "wrong_final": 0, "flagged": 1,
                                          "right_doubted": 1}
    assert totals["single_file"]["right"] == 1 and totals["seconds_median"] is not None
    printed = capsys.readouterr().out
    assert "right 3/5, wrong reported as final 1/5, flagged 1/5 (right but doubted: 1)" in printed
    assert f"wrote {out}" in printed
