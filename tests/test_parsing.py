"""The reply parser: which code runs and which FINAL counts."""

from recursa._parsing import FinalAnswer, find_code_blocks, find_final


def test_every_python_fence_tag_is_code() -> None:
    reply = "a\n```repl\nx = 1\n```\nb\n```python\ny = 2\n```\n```py\nz = 3\n```\n```\nw = 4\n```\n"
    assert find_code_blocks(reply) == ["x = 1\n", "y = 2\n", "z = 3\n", "w = 4\n"]


def test_output_and_shell_fences_are_not_run() -> None:
    reply = "```text\nhello\n```\n```bash\nls\n```\n```json\n{}\n```\n```repl\nprint(1)\n```"
    assert find_code_blocks(reply) == ["print(1)\n"]


def test_unclosed_last_fence_still_runs() -> None:
    assert find_code_blocks("Let me look.\n```repl\nprint(len(context))\n") == ["print(len(context))\n"]


def test_final_text_forms() -> None:
    assert find_final("The answer:\nFINAL(42)") == FinalAnswer("text", "42")
    assert find_final('FINAL("Paris")') == FinalAnswer("text", "Paris")
    assert find_final("**FINAL(7)**") == FinalAnswer("text", "7")
    assert find_final("FINAL(about 3 (maybe 4) users)") == FinalAnswer("text", "about 3 (maybe 4) users")
    assert find_final("FINAL(It's 12)") == FinalAnswer("text", "It's 12")
    assert find_final("FINAL(line one\nline two)") == FinalAnswer("text", "line one\nline two")


def test_final_var_forms() -> None:
    assert find_final("FINAL_VAR(result)") == FinalAnswer("var", "result")
    assert find_final("FINAL_VAR('result')") == FinalAnswer("var", "result")


def test_final_inside_code_is_not_a_text_final() -> None:
    assert find_final("```repl\nFINAL(x)\n```") is None
    assert find_final("I will call FINAL later") is None


def test_unbalanced_final_takes_up_to_last_parenthesis() -> None:
    assert find_final("FINAL(3 (three)") == FinalAnswer("text", "3 (three")
