"""Templated step parameters: Jinja2's sandbox with StrictUndefined.

A value that is exactly one expression, ``"{{ params.bios }}"``, renders to the value itself
(an object stays an object, a number a number); any other string with ``{{`` or ``{%``
renders to a string. A name that is not defined is an error naming what was missing, never
an empty string sent to a BMC. Values inside lists and objects are rendered too.

Jinja2 is imported when a template is first compiled, not with the app: most requests and
every report ingested render nothing, and a Lambda cold start is shorter without it.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}).)*)\}\}\s*$", re.DOTALL)


@lru_cache(maxsize=1)
def _environment() -> Any:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    return ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False,
                                         keep_trailing_newline=False)


class TemplateProblem(ValueError):
    """A template that does not parse, or names a value that is not there."""


def is_template(value: Any) -> bool:
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, dict):
        return any(is_template(v) for v in value.values())
    if isinstance(value, list):
        return any(is_template(v) for v in value)
    return False


def check_syntax(value: Any, what: str) -> None:
    """Raise ValueError if a template in ``value`` does not parse."""
    if isinstance(value, dict):
        for key, item in value.items():
            check_syntax(item, f"{what}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_syntax(item, f"{what}[{index}]")
    elif isinstance(value, str) and is_template(value):
        from jinja2 import TemplateError

        try:
            _compiled(value)
        except TemplateError as exc:
            raise ValueError(f"{what}: the template {value!r} does not parse: {exc}") from None


def render(value: Any, context: dict[str, Any]) -> Any:
    """``value`` with every template rendered; TemplateProblem says what was undefined."""
    if isinstance(value, dict):
        return {key: render(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, context) for item in value]
    if not (isinstance(value, str) and is_template(value)):
        return value
    from jinja2 import StrictUndefined, TemplateError, UndefinedError

    try:
        expression, template = _compiled(value)
        if expression is not None:
            result = expression(**context)
            if isinstance(result, StrictUndefined):
                str(result)  # raises UndefinedError with Jinja's own message
            return result
        assert template is not None
        return template.render(**context)
    except UndefinedError as exc:
        raise TemplateProblem(f"{exc.message} (in {value!r})") from None
    except TemplateError as exc:
        raise TemplateProblem(f"{exc} (in {value!r})") from None


@lru_cache(maxsize=4096)
def _compiled(value: str) -> tuple[Any, Any]:
    """(expression, None) for a single ``{{ expr }}``, else (None, template)."""
    match = _SINGLE_EXPRESSION.match(value)
    if match and "{{" not in match["expr"] and "{%" not in match["expr"]:
        return _environment().compile_expression(match["expr"].strip(),
                                                 undefined_to_none=False), None
    return None, _environment().from_string(value)
