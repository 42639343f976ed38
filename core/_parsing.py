"""Reading the root model's reply: the code blocks to run and a FINAL answer written as text.

One tolerant parser, in one place: small models write fences with odd tags or forget to close the
last one, wrap FINAL in markdown, quote its argument, or put parentheses inside the answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["CODE_GRAMMAR", "STEP_GRAMMAR", "FinalAnswer", "find_code_blocks", "find_final", "text_outside_code"]

STEP_GRAMMAR = r"""
root ::= code | final
code ::= "```repl\n" line+ "```"
line ::= [^`\n] [^\n]* "\n" | "\n"
final ::= "FINAL(" [^\n]+ ")" | "FINAL_VAR(" [A-Za-z_] [A-Za-z0-9_]* ")"
"""
"""GBNF for backends that take one (llama.cpp): a root reply is exactly one ```repl block or one FINAL."""
CODE_GRAMMAR = STEP_GRAMMAR.replace("root ::= code | final", "root ::= code")
"""The same, code only: the reply after a refused FINAL must look at the data again, not repeat itself."""

# Fence tags that are clearly not code for the REPL; any other tag (or none) is run as Python.
_NOT_CODE = {"text", "txt", "output", "json", "markdown", "md", "bash", "sh", "shell", "console", "plaintext"}
_TAG_LINE = re.compile(r"[ \t]*(?:repl|python3?|py|ipython)[ \t]*\n", re.IGNORECASE)
_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:^[ \t]*```[ \t]*$|\Z)", re.DOTALL | re.MULTILINE)
_FINAL_START = re.compile(r"^[\s>*_`#-]*(FINAL_VAR|FINAL)\s*\(", re.MULTILINE)


@dataclass(frozen=True)
class FinalAnswer:
    """A FINAL written in the reply's text (not inside code)."""

    kind: str
    """"text" for FINAL(...), "var" for FINAL_VAR(name)."""
    value: str


def find_code_blocks(reply: str) -> list[str]:
    """Code of every fenced block meant for the REPL, in order."""
    blocks: list[str] = []
    for match in _FENCE.finditer(reply):
        tag, code = match.group(1).lower(), match.group(2)
        if not tag and (tag_line := _TAG_LINE.match(code)):  # "```" then "repl" on its own line
            code = code[tag_line.end():]
        if tag in _NOT_CODE or not code.strip():
            continue
        code = code.rstrip() + "\n"
        if code not in blocks:  # a model that repeats one block in a reply means it once
            blocks.append(code)
    return blocks


def text_outside_code(reply: str) -> str:
    """The reply with its fenced blocks removed."""
    return _FENCE.sub("", reply)


def find_final(reply: str) -> FinalAnswer | None:
    """The FINAL(...) or FINAL_VAR(...) written as text outside code blocks, if any (the last one wins)."""
    text = text_outside_code(reply)
    matches = list(_FINAL_START.finditer(text))
    if not matches:
        return None
    match = matches[-1]
    inner = _balanced(text, match.end())
    kind = "var" if match.group(1) == "FINAL_VAR" else "text"
    value = _unquote(inner.strip())
    if kind == "var":
        value = value.strip().strip("`")
    return FinalAnswer(kind, value)


def _balanced(text: str, start: int) -> str:
    """Text from ``start`` up to the parenthesis closing the one just before it (or the last ``)``)."""
    depth = 1
    quote: str | None = None
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            if ch == quote and text[i - 1] != "\\":
                quote = None
        elif ch in "\"'" and (i == start or text[i - 1] in "( ,=\n"):
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return text[start:i]
    end = text.rfind(")")
    return text[start:end] if end >= start else text[start:]


def _unquote(value: str) -> str:
    for q in ('"""', "'''", '"', "'"):
        if len(value) >= 2 * len(q) and value.startswith(q) and value.endswith(q):
            return value[len(q) : -len(q)]
    return value
