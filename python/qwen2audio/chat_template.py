"""Chat-template rendering exactly as transformers renders it (jinja2, same environment options)."""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


class TemplateError(ValueError):
    """A chat template raised an error (``raise_exception`` in the template) or failed to render."""


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys: bool = False) -> str:
    # transformers' filter differs from jinja2's built-in one: no HTML escaping, unicode kept.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


@lru_cache(maxsize=16)
def compile_template(source: str) -> jinja2.Template:
    # trim_blocks + lstrip_blocks are what make HF's rendering of multi-line templates what it is.
    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    environment.filters["tojson"] = _tojson
    environment.globals["raise_exception"] = _raise_exception
    environment.globals["strftime_now"] = _strftime_now
    try:
        return environment.from_string(source)
    except jinja2.TemplateSyntaxError as error:
        raise TemplateError(f"chat template does not compile: {error}") from error


def render(source: str, messages: list[dict[str, Any]], add_generation_prompt: bool = False, **variables: Any) -> str:
    if not isinstance(messages, (list, tuple)) or not all(isinstance(message, dict) for message in messages):
        raise ValueError("a conversation is a list of {'role': ..., 'content': ...} dicts")
    for index, message in enumerate(messages):
        if "role" not in message or "content" not in message:
            raise ValueError(f"message {index} needs both 'role' and 'content': {message!r}")
    variables.setdefault("tools", None)
    variables.setdefault("documents", None)
    try:
        return compile_template(source).render(messages=messages, add_generation_prompt=add_generation_prompt, **variables)
    except TemplateError:
        raise
    except (jinja2.TemplateError, ArithmeticError, LookupError, TypeError, ValueError, AttributeError) as error:
        # A template is code from the checkpoint: whatever Python error it runs into (the sandbox's
        # OverflowError for a huge range, a division by zero, a bad index) is reported as its failure.
        raise TemplateError(f"chat template failed to render: {type(error).__name__}: {error}") from error
