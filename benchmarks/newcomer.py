"""A newcomer's questions about recursa's own source, asked with recursa and scored against that source.

    python benchmarks/newcomer.py [--model local] [--max-iterations 8] [--only NAME,...] [--trace-dir DIR]
                                  [--out benchmarks/results/newcomer.json]

Issue 11 began with a new user asking grep-checkable questions over ``core/`` ("What is the default value of
max_iterations in Budget?") and getting wrong answers reported as final. This script asks questions of that
kind, in the words a newcomer uses, in three shapes: the value of a module constant, the default of a dataclass
field or keyword parameter, and which file defines a class or function. Most are asked over the whole package
directory (``Path(recursa.__file__).parent``, loaded by ``recursa.load_context`` as ``recursa ask -c core/``
loads it); two over a single file, given as ``cat FILE | recursa ask -c -`` gives it.

The targets are a short list of names (``TARGETS``); their gold answers are read from the source with ``ast``
each run, so the benchmark stays true as the code changes (a target that vanishes or becomes ambiguous is an
error naming it). Each answer is one of:

- ``right``: a value question's answer holds the gold value (numbers compared as numbers: its first number, or
  any of at most three; strings as whole tokens, case kept), or a "which file" answer names the gold file first
  (its path relative to the package, or its base name when no other file has it);
- ``wrong_final``: wrong, and reported as final (``stopped_reason == "final"`` and not ``grounded is False``):
  nothing tells the user;
- ``flagged``: wrong, and the run said so (any other ``stopped_reason``, or ``grounded`` False).

Right answers the run doubted are also counted in ``right_doubted``. The cache of model calls is off
(``cache=False``, what ``RECURSA_CACHE=off`` does): a replayed answer costs no time and would hide a change.
Prints a row per question as it ends, then the table and totals; writes JSON with every question (rewritten
after each one, so an interrupted run keeps what it measured).
"""

from __future__ import annotations

import argparse
import ast
import json
import operator
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import recursa
from recursa import LM, RLM, Budget, Context, RecursaError, default_lm, load_context

DEFAULT_MODEL = "local"
DEFAULT_MAX_ITERATIONS = 8
SHAPES = ("constant", "default", "file")
OUTCOMES = ("right", "wrong_final", "flagged")


@dataclass(frozen=True)
class Target:
    """What to ask about: the gold answer is looked up by ``name`` in the source, never written here."""

    shape: str
    """"constant" (``NAME``), "default" (``Class.field``, ``Class.param`` of its ``__init__``, ``function.param``)
    or "file" (a class or function name)."""
    name: str
    question: str
    file: str | None = None
    """Ask over this one file (relative to the package), piped, instead of the whole directory."""
    kind: str | None = None
    """For "file": "class" or "function", as the question says."""


TARGETS: tuple[Target, ...] = (
    Target("default", "Budget.max_iterations", "What is the default value of max_iterations in Budget?"),
    Target("constant", "DEFAULT_OPENAI_MODEL", "What is DEFAULT_OPENAI_MODEL set to?"),
    Target("file", "RunStream", "Which file defines the class RunStream?", kind="class"),
    Target("default", "Budget.timeout_s", "What is the default timeout_s of a Budget?", file="_budget.py"),
    Target("file", "read_trace", "Which file defines the function read_trace?", kind="function"),
    Target("constant", "LOCAL_MODEL_NAME", "What does LOCAL_MODEL_NAME equal?", file="_defaults.py"),
    Target("constant", "DEFAULT_BASE_WINDOW_CHARS", "What's the value of DEFAULT_BASE_WINDOW_CHARS?"),
    Target("constant", "OPENAI_URL", "Which URL is OPENAI_URL set to?"),
    Target("constant", "RESULTS_FILE", "What is RESULTS_FILE? I need the file name."),
    Target("constant", "MAX_FIELD_CHARS", "how big is MAX_FIELD_CHARS?"),
    Target("default", "SandboxLimits.memory_mb", "How many MB of memory does SandboxLimits allow by default?"),
    Target("default", "LoadLimits.max_files", "What is the default max_files of LoadLimits?"),
    Target("default", "RLM.concurrency", "What is the default concurrency when I create an RLM?"),
    Target("default", "make_lookup.chars", "How many characters does make_lookup use by default (its chars argument)?"),
    Target("default", "render_html.title", "What title does render_html give the page if I don't pass one?"),
    Target("file", "LocalLlama", "Where is the LocalLlama class defined?", kind="class"),
    Target("file", "make_models", "In which file is the function make_models?", kind="function"),
    Target("file", "PromptTemplates", "Which file has the class PromptTemplates in it?", kind="class"),
)


@dataclass(frozen=True)
class Question:
    """A target with its gold answer, read from the source this run."""

    target: Target
    scope: str
    """What the question is asked over: the package directory, or one file in it."""
    gold: str
    """The gold as the source writes it (``30``, ``"gpt-5-mini"``, ``_loop.py``)."""
    value: str | int | float
    """Value questions: the evaluated value. File questions: the file's path relative to the package."""
    accept: tuple[str, ...]
    """File questions: the names that count as naming the gold file."""
    where: str
    """``file:line`` the gold was read from."""

    @property
    def id(self) -> str:
        return f"{self.target.shape}:{self.target.name}" + (f"@{self.target.file}" if self.target.file else "")


# -- gold answers from the source ----------------------------------------------------------------------------

_OPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Pow: operator.pow,
    ast.FloorDiv: operator.floordiv, ast.LShift: operator.lshift, ast.BitOr: operator.or_,
}


def literal(node: ast.expr) -> str | int | float:
    """A str, int or float constant, or arithmetic on them (``128 * 2**20``); anything else is a ValueError."""
    value = getattr(node, "value", None)
    if isinstance(node, ast.Constant) and isinstance(value, str | int | float) and not isinstance(value, bool):
        return value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](literal(node.left), literal(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -literal(node.operand)
    raise ValueError(f"not a str, int or float literal: {ast.unparse(node)}")


def _module_constant(tree: ast.Module, name: str) -> ast.expr | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return node.value
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
            return node.value
    return None


def _parameter_default(function: ast.FunctionDef | ast.AsyncFunctionDef, name: str) -> ast.expr | None:
    args = function.args
    positional = args.posonlyargs + args.args
    pairs = list(zip(positional[len(positional) - len(args.defaults):], args.defaults, strict=True))
    pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is not None]
    return next((default for arg, default in pairs if arg.arg == name), None)


def _default(tree: ast.Module, owner: str, name: str) -> ast.expr | None:
    """``owner.name``: a class field's default (``name: int = 30``) or its ``__init__`` parameter's, or a
    module-level function's parameter default."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == owner:
            for item in node.body:
                if (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and item.target.id == name
                        and item.value is not None):
                    return item.value
            init = next((i for i in node.body if isinstance(i, ast.FunctionDef) and i.name == "__init__"), None)
            return _parameter_default(init, name) if init else None
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == owner:
            return _parameter_default(node, name)
    return None


def _definitions(tree: ast.Module, name: str) -> set[str]:
    """The kinds ("class", "function") of everything named ``name`` defined anywhere in the module."""
    return {"class" if isinstance(node, ast.ClassDef) else "function" for node in ast.walk(tree)
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name}


def _only_one(target: Target, found: dict[str, Any], scope: str) -> tuple[str, Any]:
    if len(found) != 1:
        where = f"in {', '.join(sorted(found))}" if found else "nowhere"
        raise ValueError(f"{target.name} is defined {where} in {scope}: update TARGETS in {Path(__file__).name}")
    return next(iter(found.items()))


def build_questions(files: dict[str, str], targets: Sequence[Target] = TARGETS) -> list[Question]:
    """Every target with its gold read from ``files`` (path relative to the package -> text, as loaded)."""
    trees = {rel: ast.parse(text) for rel, text in files.items() if rel.endswith(".py")}
    names = accepted_names(list(files))
    questions = []
    for target in targets:
        if target.file is not None and target.file not in trees:
            raise ValueError(f"{target.file} is not a Python file of the package: update TARGETS")
        scope = {target.file: trees[target.file]} if target.file else trees
        scope_name = target.file or "the package"
        if target.shape == "file":
            found = {rel: kinds for rel, tree in scope.items() if (kinds := _definitions(tree, target.name))}
            rel, kinds = _only_one(target, found, scope_name)
            if target.kind not in kinds:
                raise ValueError(f"{target.name} in {rel} is a {'/'.join(sorted(kinds))}, not a {target.kind}")
            line = next(n.lineno for n in ast.walk(scope[rel]) if getattr(n, "name", None) == target.name)
            questions.append(Question(target, scope_name, rel, rel, names[rel], f"{rel}:{line}"))
            continue
        if target.shape == "constant":
            found = {rel: node for rel, tree in scope.items() if (node := _module_constant(tree, target.name))}
        elif target.shape == "default":
            owner, _, name = target.name.partition(".")
            found = {rel: node for rel, tree in scope.items() if (node := _default(tree, owner, name))}
        else:
            raise ValueError(f"unknown shape {target.shape!r}; shapes: {', '.join(SHAPES)}")
        rel, node = _only_one(target, found, scope_name)
        gold = ast.get_source_segment(files[rel], node) or ast.unparse(node)
        questions.append(Question(target, scope_name, gold, literal(node), (), f"{rel}:{node.lineno}"))
    return questions


# -- scoring -----------------------------------------------------------------------------------------------

_NUMBER = re.compile(r"(?<![\w.-])(?:\d{1,3}(?:,\d{3})+|\d[\d_]*)(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\d_])")


def numbers_in(text: str) -> list[float]:
    """The numbers an answer states, in order (``1,000`` and ``1_000`` read as 1000; digits inside names skipped)."""
    return [float(m.group().replace(",", "").replace("_", "")) for m in _NUMBER.finditer(text)]


def _has_token(text: str, value: str) -> bool:
    return re.search(rf"(?<![\w.-]){re.escape(value)}(?![\w-])", text) is not None


def first_file(answer: str, accept_by_file: dict[str, tuple[str, ...]]) -> str | None:
    """The file an answer names first (by any of its accepted names), or None."""
    best: tuple[int, int, str] | None = None
    for rel, names in accept_by_file.items():
        for name in names:
            match = re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w-])", answer)
            if match and (best is None or (match.start(), -len(name)) < best[:2]):
                best = (match.start(), -len(name), rel)
    return best[2] if best else None


def accepted_names(files: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Each loaded file's names an answer may use: its relative path, and its base name when unique."""
    bases = [rel.rsplit("/", 1)[-1] for rel in files]
    return {rel: (rel, base) if bases.count(base) == 1 and base != rel else (rel,)
            for rel, base in zip(files, bases, strict=True)}


def is_right(question: Question, answer: str | None, files: Sequence[str] = ()) -> bool:
    """Whether ``answer`` gives the gold (see the module docstring for the rules)."""
    if not answer or not answer.strip():
        return False
    if question.target.shape == "file":
        names = accepted_names(files) if files else {}
        names[str(question.value)] = question.accept
        return first_file(answer, names) == question.value
    gold = question.value
    if isinstance(gold, str):
        return _has_token(answer, gold)
    stated = numbers_in(answer)
    if stated and (stated[0] == gold or (gold in stated and len(stated) <= 3)):
        return True
    # An expression written as in the source (``128 * 2**20``), spacing aside.
    source = re.sub(r"\s+", "", question.gold)
    return not re.fullmatch(r"[\d_.]+", source) and re.search(
        rf"(?<![\w.]){re.escape(source)}(?![\w.])", re.sub(r"\s+", "", answer)) is not None


def doubted(stopped_reason: str, grounded: bool | None) -> bool:
    """Whether the run told the user not to trust its answer."""
    return stopped_reason != "final" or grounded is False


def outcome(right: bool, stopped_reason: str, grounded: bool | None) -> str:
    """"right", "wrong_final" (wrong and reported as final) or "flagged" (wrong, and the run said so)."""
    if right:
        return "right"
    return "flagged" if doubted(stopped_reason, grounded) else "wrong_final"


def totals(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts of each outcome, overall and per shape, and seconds per question."""
    def count(subset: Sequence[dict[str, Any]]) -> dict[str, int]:
        out = {"questions": len(subset), **{name: sum(r["outcome"] == name for r in subset) for name in OUTCOMES}}
        out["right_doubted"] = sum(r["outcome"] == "right" and r["doubted"] for r in subset)
        return out

    seconds = [r["seconds"] for r in rows]
    return {
        **count(rows),
        "by_shape": {shape: count([r for r in rows if r["shape"] == shape]) for shape in SHAPES},
        "single_file": count([r for r in rows if r["scope"] != "the package"]),
        "seconds_median": round(statistics.median(seconds), 2) if seconds else None,
        "seconds_total": round(sum(seconds), 2),
    }


# -- running -----------------------------------------------------------------------------------------------


def package_files(root: Path) -> Context:
    """The package directory as ``recursa ask -c <dir>`` loads it (ignore rules, skips and limits alike)."""
    return load_context(root)


def piped(text: str) -> Context:
    """One file's text as ``recursa ask -c -`` passes it from stdin."""
    return load_context(Context([text], ["<stdin>"], [{"source": "stdin"}]))


def ask(questions: Sequence[Question], lm: LM, directory: Context, *, max_iterations: int,
        trace_dir: Path | None = None, on_row: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Ask each question in a fresh run (one model, cache off) over ``directory`` or its one file, and score it."""
    files = dict(zip(directory.names, directory.documents, strict=True))
    budget = Budget().with_overrides(max_iterations=max_iterations)
    rlm = RLM(lm, lm, budget=budget, cache=False)
    rows: list[dict[str, Any]] = []
    for number, question in enumerate(questions, 1):
        file = question.target.file
        context = piped(files[file]) if file else directory
        slug = re.sub(r"[^\w.]+", "-", question.id)
        trace = trace_dir / f"{number:02d}-{slug}.jsonl" if trace_dir else None
        started = time.perf_counter()
        try:
            result: Any = rlm.run(question.target.question, context, trace_path=trace)
        except RecursaError as exc:  # the partial result, if the run got that far
            result = getattr(exc, "result", None)
            error = str(exc)
        else:
            error = result.error
        seconds = time.perf_counter() - started
        answer = result.answer if result is not None else None
        stopped = result.stopped_reason if result is not None else "error"
        grounded = result.grounded if result is not None else None
        right = is_right(question, answer, list(files))
        row = {
            "id": question.id, "shape": question.target.shape, "scope": question.scope,
            "question": question.target.question, "gold": question.gold, "gold_value": question.value,
            "accepted": list(question.accept), "gold_where": question.where, "answer": answer,
            "stopped_reason": stopped, "grounded": grounded, "right": right,
            "outcome": outcome(right, stopped, grounded), "doubted": doubted(stopped, grounded),
            "seconds": round(seconds, 2), "iterations": result.iterations if result is not None else 0,
            "model": (result.model if result is not None else "") or lm.model, "error": error,
            "trace": str(trace) if trace else None,
        }
        rows.append(row)
        if on_row:
            on_row(row)
    return rows


def _clip(text: Any, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _line(number: int, row: dict[str, Any]) -> str:
    scope = "file" if row["scope"] != "the package" else "dir"
    return (f"{number:>2} {row['shape']:<8} {scope:<4} {_clip(row['gold'], 26):<26} {_clip(row['answer'], 30):<30} "
            f"{row['outcome']:<11} {row['stopped_reason']:<14} {str(row['grounded']):<5} {row['seconds']:>6.1f}")


HEADER = (f"{'#':>2} {'shape':<8} {'over':<4} {'gold':<26} {'answer':<30} {'outcome':<11} {'stopped':<14} "
          f"{'grnd':<5} {'s':>6}")


def main(argv: Sequence[str] | None = None, *, lm: LM | None = None) -> dict[str, Any]:
    """Run the benchmark; ``lm`` replaces the model named by ``--model`` (tests pass a scripted one)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="'local' (the embedded model) or a hosted model name (OPENAI_API_KEY / OPENAI_BASE_URL)")
    parser.add_argument("--max-iterations", type=int, default=DEFAULT_MAX_ITERATIONS, help="root turns per question")
    parser.add_argument("--only", default="", help="comma-separated target names, e.g. Budget.max_iterations,RunStream")
    parser.add_argument("--trace-dir", default=None, help="write each question's JSONL trace here (recursa view)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "newcomer.json"))
    args = parser.parse_args(argv)

    root = Path(recursa.__file__).parent
    directory = package_files(root)
    files = dict(zip(directory.names, directory.documents, strict=True))
    wanted = {name.strip() for name in args.only.split(",") if name.strip()}
    unknown = wanted - {t.name for t in TARGETS}
    if unknown:
        parser.error(f"unknown target(s) {', '.join(sorted(unknown))}; known: {', '.join(t.name for t in TARGETS)}")
    questions = build_questions(files, [t for t in TARGETS if not wanted or t.name in wanted])
    try:
        model = lm or default_lm(args.model)
    except RecursaError as exc:  # a named model no endpoint serves: say so in one line
        parser.error(str(exc))
    trace_dir = Path(args.trace_dir) if args.trace_dir else None
    if trace_dir:
        trace_dir.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "benchmark": "newcomer",
        "command": " ".join(["python", "benchmarks/newcomer.py", *(argv if argv is not None else sys.argv[1:])]),
        "model": model.model, "max_iterations": args.max_iterations, "cache": False,
        "package_dir": str(root), "package_files": len(files), "package_chars": directory.total_chars,
        "complete": False, "questions": [], "totals": totals([]),
    }

    def on_row(row: dict[str, Any]) -> None:
        report["questions"].append(row)
        report["totals"] = totals(report["questions"])
        out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        print(_line(len(report["questions"]), row), flush=True)

    print(f"{len(questions)} questions over {root} ({len(files)} files, {directory.total_chars:,} characters), "
          f"model {model.model}, at most {args.max_iterations} turns each, cache off", flush=True)
    print(HEADER, flush=True)
    rows = ask(questions, model, directory, max_iterations=args.max_iterations, trace_dir=trace_dir, on_row=on_row)
    report.update(
        complete=True, totals=totals(rows), python=sys.version.split()[0], platform=platform.platform(),
        cpus=os.cpu_count(), load_average_1m=round(os.getloadavg()[0], 2),
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")

    print("\n" + HEADER)
    for number, row in enumerate(rows, 1):
        print(_line(number, row))
    t = report["totals"]
    n = t["questions"]
    print(f"\nright {t['right']}/{n}, wrong reported as final {t['wrong_final']}/{n}, flagged {t['flagged']}/{n} "
          f"(right but doubted: {t['right_doubted']})")
    for shape, c in t["by_shape"].items():
        print(f"  {shape:<8} right {c['right']}/{c['questions']}, wrong final {c['wrong_final']}, "
              f"flagged {c['flagged']}")
    print(f"median {t['seconds_median']} s per question, {t['seconds_total']} s in all")
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
