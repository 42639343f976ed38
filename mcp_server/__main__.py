"""``python -m recursa.mcp_server``: run the MCP server through the same command definition as ``recursa mcp``."""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``recursa mcp`` (its options, help and error handling) as the program ``python -m recursa.mcp_server``."""
    import typer  # only here: importing recursa.mcp_server needs no CLI
    from recursa.cli import mcp

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
    app.command()(mcp)
    typer.main.get_command(app).main(args=argv, prog_name="python -m recursa.mcp_server")


if __name__ == "__main__":
    main()
