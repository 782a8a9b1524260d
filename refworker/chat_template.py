"""Chat template rendering for HTTP mode, with ``transformers``' semantics when it is installed."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

Renderer = Callable[[str, list[dict[str, Any]], list[dict[str, Any]] | None, dict[str, Any]], str]


def load_renderer() -> Renderer:
    """``transformers``' own renderer if importable (slow to import: call once at start-up), else jinja2."""
    try:
        from transformers.utils.chat_template_utils import render_jinja_template
    except ImportError:
        return _render_with_jinja

    def render(
        template: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        extra: dict[str, Any],
    ) -> str:
        rendered = render_jinja_template(
            conversations=[messages],
            tools=list(tools) if tools is not None else None,
            chat_template=template,
            add_generation_prompt=True,
            **extra,
        )
        return str(rendered[0][0])

    return render


def _render_with_jinja(
    template: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, extra: dict[str, Any]
) -> str:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    def tojson(value: Any, indent: int | None = None, ensure_ascii: bool = False) -> str:
        return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(
        messages=messages, tools=tools, add_generation_prompt=True, **extra
    )


def normalise_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI content-part lists flattened to strings: templates like Qwen's expect plain text."""
    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            text = "".join(
                p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
            )
            message = {**message, "content": text}
        out.append(message)
    return out
