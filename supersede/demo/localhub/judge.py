"""The demo's judge: an OpenAI-compatible chat endpoint (``POST /v1/chat/completions``) that
plays a judge model by a fixed rule, so the judged task runs offline and the same every time.

The rule stands in for the product-copy rubric: the better description names more of the
product's attributes (the ``Product``, ``Material``, ``Colour`` and ``Feature`` lines of the
prompt), word for word. Equal counts are a tie. It answers in the format the judge is asked for
(``{"winner": "A" | "B" | "tie"}``, or ``{"score": 1-5}`` against a reference) and reports token
usage as a hosted endpoint does, so the judging's cost shows.
"""

from __future__ import annotations

import json
import re
from typing import Any

from supersede.demo.localhub.server import LocalHandler, LocalServer

MODEL = "scripted-judge"
_ATTRIBUTES = re.compile(r"^(?:Product|Material|Colour|Feature):\s*(.+)$", re.MULTILINE)
_WORD = re.compile(r"[a-z0-9-]+")


def _section(text: str, tag: str) -> str:
    found = re.search(rf"<{tag}>\n(.*?)\n</{tag}>", text, re.DOTALL)
    return found.group(1) if found else ""


def named(answer: str, prompt: str) -> int:
    """How many of the prompt's attribute words the answer names."""
    wanted = {w for line in _ATTRIBUTES.findall(prompt) for w in _WORD.findall(line.lower())}
    return len(wanted & set(_WORD.findall(answer.lower())))


def verdict(messages: list[dict[str, Any]]) -> str:
    """The rule's answer to one judge question."""
    user = str(messages[-1].get("content", "")) if messages else ""
    prompt = _section(user, "prompt")
    if "<answer_a>" in user:
        a, b = named(_section(user, "answer_a"), prompt), named(_section(user, "answer_b"), prompt)
        winner = "A" if a > b else "B" if b > a else "tie"
        return json.dumps({"winner": winner, "reason": f"names {a} vs {b} of the attributes"})
    wanted = max(1, named(_section(user, "reference"), prompt))
    score = 1 + round(4 * min(1.0, named(_section(user, "answer"), prompt) / wanted))
    return json.dumps({"score": score})


class _Handler(LocalHandler):
    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/v1/chat/completions":
            self.send_json(404, {"error": {"message": "not found"}})
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
            messages = list(body.get("messages") or [])
        except (ValueError, TypeError, AttributeError):
            self.send_json(400, {"error": {"message": "the body is not a chat request"}})
            return
        content = verdict(messages)
        asked = sum(len(str(m.get("content", ""))) for m in messages) // 4
        self.send_json(200, {
            "id": "chatcmpl-demo", "object": "chat.completion", "model": MODEL,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": asked, "completion_tokens": len(content) // 4,
                      "total_tokens": asked + len(content) // 4},
        })  # fmt: skip


class JudgeServer(LocalServer):
    """The scripted judge on ``http://127.0.0.1:<free port>/v1``."""

    handler_class = _Handler

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL (an ``api_candidates`` entry's ``base_url``)."""
        return f"{self.url}/v1"
