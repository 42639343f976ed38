"""An ``LM`` that answers through the MCP client's own model (``sampling/createMessage``).

With ``--sampling`` the server needs no API key: root and sub calls are sent back to the client,
which runs them on the model its user already has. Each request belongs to the tool call that caused
it (``related_request_id``), so on streamable HTTP it travels on that call's response stream.

Sampling is deprecated by the 2026-07-28 specification (SEP-2577) but stays functional on the
handshake-era protocol versions (2025-11-25 and earlier) that clients speak today; the per-request
2026-07-28 protocol forbids server-to-client requests in the middle of a tool call.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from recursa import Completion, LMError, Message, Usage

from ._sdk import Context, call_quietly, can_send_request, client_capabilities, types

__all__ = ["SamplingLM", "SamplingUnavailable", "check_sampling"]


class SamplingUnavailable(LMError):
    """The connected client cannot run sampling requests for this server."""


def check_sampling(ctx: Context) -> None:
    """Raise ``SamplingUnavailable`` (with what to do instead) when this client cannot sample."""
    caps = client_capabilities(ctx)
    if caps is None or caps.sampling is None:
        raise SamplingUnavailable(
            "This recursa server was started with --sampling, but your MCP client does not offer sampling "
            "(few do; VS Code with GitHub Copilot does). Restart the server without --sampling and set "
            "OPENAI_API_KEY (or OPENAI_BASE_URL) in its environment, or run it with the local model."
        )
    if not can_send_request(ctx):
        raise SamplingUnavailable(
            "This connection uses the 2026-07-28 MCP protocol, which does not allow sampling in the middle of "
            "a tool call; restart the server without --sampling and configure a model endpoint."
        )


class SamplingLM:
    """Completes chats with ``sampling/createMessage`` on the MCP session bound to it.

    ``bind(ctx)`` attaches the tool call whose client should answer; a ``SamplingLM`` kept with an
    open context is re-bound for each ``ask``.
    """

    def __init__(self, ctx: Context | None = None, *, max_tokens: int = 8192, model: str = "client-sampling") -> None:
        self.model = model
        self.max_tokens = max_tokens
        self._ctx = ctx

    @contextmanager
    def bind(self, ctx: Context) -> Iterator[SamplingLM]:
        previous, self._ctx = self._ctx, ctx
        try:
            yield self
        finally:
            self._ctx = previous

    async def complete(self, messages: list[Message], **params: Any) -> Completion:
        ctx = self._ctx
        if ctx is None:
            raise SamplingUnavailable("Client sampling is only available while a tool call is running.")
        check_sampling(ctx)
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system") or None
        chat = [
            types.SamplingMessage(
                role="assistant" if m["role"] == "assistant" else "user",
                content=types.TextContent(type="text", text=m["content"]),
            )
            for m in messages
            if m["role"] != "system"
        ]
        try:
            result = await call_quietly(lambda: ctx.session.create_message(
                chat,
                max_tokens=int(params.get("max_tokens", self.max_tokens)),
                system_prompt=system,
                related_request_id=ctx.request_id,
            ))
        except Exception as exc:  # the client refused, timed out or failed; the run ends with this error
            raise LMError(f"The MCP client's sampling request failed: {exc}", model=self.model) from exc
        content = result.content
        text = getattr(content, "text", None)
        if not isinstance(text, str):
            raise LMError(
                f"The MCP client answered a sampling request with {getattr(content, 'type', 'unknown')} content, "
                "not text.", model=self.model,
            )
        prompt_chars = sum(len(m["content"]) for m in messages)
        usage = Usage(input_tokens=max(1, prompt_chars // 4), output_tokens=max(1, len(text) // 4))
        return Completion(text=text, usage=usage, cost_usd=0.0, model=result.model or self.model)
