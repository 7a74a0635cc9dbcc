"""What an installed node says about itself when it phones home, checked.

The body is a JSON object with exactly ``os``, ``kernel``, ``k3s_version`` and
``node_name``, each a string of at most 128 printable characters, the whole at most 4 KiB.
"""

from __future__ import annotations

import json

from edgeplane.protocol import excerpt

MAX_BODY_BYTES = 4096
MAX_FACT_CHARS = 128
FACTS = ("os", "kernel", "k3s_version", "node_name")


def parse_facts(body: bytes, content_type: str | None) -> dict[str, str]:
    """The facts of a phone-home body; ValueError naming what is wrong."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise ValueError(f"Content-Type {excerpt(content_type)} is not application/json")
    if len(body) > MAX_BODY_BYTES:
        raise ValueError(f"body of {len(body)} bytes is larger than {MAX_BODY_BYTES}")
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"body is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ValueError(f"body is a JSON {type(document).__name__}, not an object")
    unknown = sorted(set(document) - set(FACTS))
    missing = [name for name in FACTS if name not in document]
    if unknown or missing:
        raise ValueError("body " + "; ".join(
            part for part in (f"lacks {', '.join(missing)}" if missing else "",
                              f"has unknown field(s) {', '.join(map(excerpt, unknown))}"
                              if unknown else "") if part)
            + f" (it takes {', '.join(FACTS)})")
    for name in FACTS:
        value = document[name]
        if not isinstance(value, str) or len(value) > MAX_FACT_CHARS \
                or not value.isprintable():
            raise ValueError(f"{name} {excerpt(value)} is not a string of at most "
                             f"{MAX_FACT_CHARS} printable characters")
    return {name: document[name] for name in FACTS}
