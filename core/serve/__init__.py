"""recursa as an OpenAI-compatible endpoint: any client of the chat API gets RLM answers by changing its base URL.

    recursa serve --model gpt-5-mini --root ~/src          # http://127.0.0.1:8000/v1, model "recursa"
    OpenAI(base_url="http://127.0.0.1:8000/v1", api_key=TOKEN).chat.completions.create(model="recursa", ...)

The last user message is the question; the other messages (and any message too long to be a question)
become the REPL's ``context``; files are read by path under ``--root``. Needs ``pip install 'recursa[serve]'``.
"""

from ._app import ServeConfig, create_app
from ._server import check_binding, serve

__all__ = ["ServeConfig", "check_binding", "create_app", "serve"]
