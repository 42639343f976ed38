"""The root model's prompts, kept as one package-data template file and rendered strictly."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from string import Template

__all__ = ["PromptTemplates"]

_SECTION = re.compile(r"^=== (\w+) ===\n", re.MULTILINE)


@dataclass(frozen=True)
class PromptTemplates:
    """Every text the loop shows the root model; override any of them by passing your own.

    Each is a ``string.Template``: a missing variable raises ``KeyError`` instead of leaking ``$name``.
    """

    system: str
    sub_call_doc: str
    rlm_query_doc: str
    final_var_doc: str
    first_user: str
    first_search: str
    first_step: str
    example_str: str
    example_list: str
    output: str
    step: str
    next_step: str
    no_code: str
    ungrounded_final: str
    own_step_first: str
    empty_final: str
    final_after_error: str
    early_final: str
    deferred_final: str
    repeated_code: str
    final_turn: str
    sub_rlm_question: str

    @classmethod
    def default(cls) -> PromptTemplates:
        return cls.from_file(resources.files("recursa") / "prompts" / "rlm.md")

    @classmethod
    def from_file(cls, path: Path | resources.abc.Traversable) -> PromptTemplates:
        """Load templates from a file of ``=== name ===`` sections."""
        text = path.read_text(encoding="utf-8")
        parts = _SECTION.split(text)[1:]
        sections = {name: body.strip("\n") for name, body in zip(parts[::2], parts[1::2], strict=True)}
        missing = {f.name for f in fields(cls)} - sections.keys()
        if missing:
            raise ValueError(f"Prompt file {path} lacks sections: {', '.join(sorted(missing))}")
        return cls(**{f.name: sections[f.name] for f in fields(cls)})

    def render(self, name: str, **values: object) -> str:
        return Template(getattr(self, name)).substitute(**{k: str(v) for k, v in values.items()})
