"""docs/protocol.md against the wire contract: the topics, messages and tasks it lists are
exactly those edgeplane/protocol.py defines, with the same parameters, and its examples are
messages the contract decodes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from edgeplane import protocol
from edgeplane.protocol import Param, ParamType

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
SITE = "shop-0042"
DIRECTIONS = {"down": "cloud → gateway", "up": "gateway → cloud"}
TYPE_NAMES = {ParamType.STRING: "string", ParamType.INTEGER: "integer",
              ParamType.BOOLEAN: "boolean", ParamType.URL: "URL", ParamType.MAP: "map"}


def _table(first_header: str) -> list[list[str]]:
    """The body rows of the doc's table whose first column is ``first_header``."""
    rows: list[list[str]] = []
    inside = False
    for line in DOC.read_text().splitlines():
        if not line.startswith("|"):
            if inside:
                break
            continue
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if not inside:
            inside = cells[0] == first_header
        elif not set(cells[0]) <= {"-", " "}:
            rows.append(cells)
    assert rows, f"{DOC.name} has no table headed {first_header!r}"
    return rows


def _code(cell: str) -> str:
    match = re.match(r"`([^`]+)`", cell)
    return match.group(1) if match else cell


def _difference(what: str, documented: list[str], defined: set[str]) -> list[str]:
    problems = [f"{what} listed twice: {name}" for name in sorted(set(documented))
                if documented.count(name) > 1]
    if missing := sorted(defined - set(documented)):
        problems.append(f"{what} missing from the doc: {', '.join(missing)}")
    if extra := sorted(set(documented) - defined):
        problems.append(f"{what} in the doc but not in the contract: {', '.join(extra)}")
    return problems


def _topic_of(kind: str) -> str:
    """The topic of a message kind, built by the contract's topic functions."""
    if kind in protocol.UP_KINDS:
        return protocol.up_topic(SITE, kind)
    build = getattr(protocol, f"{kind}_topic", None)
    assert build is not None, f"the contract has no topic function for {kind!r} messages"
    return str(build(SITE))


def _as_documented(topic: str) -> str:
    return topic.replace(protocol.site_topic_root(SITE), f"{protocol.TOPIC_ROOT}/{{site}}")


def test_the_topic_table_lists_every_topic_of_the_contract():
    defined = {_as_documented(_topic_of(kind)): kind for kind in protocol.MESSAGE_TYPES}
    rows = _table("topic")
    problems = _difference("topic", [_code(row[0]) for row in rows], set(defined))
    for row in rows:
        topic = _code(row[0])
        if topic not in defined:
            continue
        direction = protocol.parse_topic(topic.replace("{site}", SITE))[1]
        if row[1] != DIRECTIONS[direction]:
            problems.append(f"topic {topic}: direction {row[1]!r}, the contract's is "
                            f"{DIRECTIONS[direction]!r}")
        if _code(row[2]) != defined[topic]:
            problems.append(f"topic {topic}: message {row[2]!r}, the contract sends "
                            f"{defined[topic]!r} on it")
    text = DOC.read_text()
    for subscription in (protocol.UP_FILTER, _as_documented(protocol.down_filter(SITE))):
        if f"`{subscription}`" not in text:
            problems.append(f"the subscription {subscription} is not in the doc")
    assert not problems, "\n".join(problems)


def _sections() -> dict[str, str]:
    """Each ``### `kind` ...`` section of the doc, by kind."""
    parts = re.split(r"^### `([a-z_]+)`.*$", DOC.read_text(), flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_every_message_has_a_section_with_an_example_the_contract_decodes():
    sections = _sections()
    problems = _difference("message", list(sections), set(protocol.MESSAGE_TYPES))
    for kind, section in sections.items():
        if kind not in protocol.MESSAGE_TYPES:
            continue
        examples = re.findall(r"```json\n(.*?)```", section, flags=re.DOTALL)
        if not examples:
            problems.append(f"message {kind}: no JSON example")
            continue
        for example in examples:
            try:
                message = protocol.decode(example, _topic_of(kind))
                if isinstance(message, protocol.Plan):
                    for step in message.steps:
                        protocol.task_spec(step.task).validate(step.params)
            except protocol.ProtocolError as exc:
                problems.append(f"message {kind}: the example does not decode: {exc}")
    assert not problems, "\n".join(problems)


def _describe(param: Param) -> str:
    """How the doc's task table writes a parameter: its values, then whether it is needed."""
    if param.choices is not None:
        values = " | ".join(f"`{choice}`" for choice in param.choices)
    else:
        values = TYPE_NAMES[param.type]
        if param.minimum is not None and param.maximum is not None:
            values += f" {param.minimum}–{param.maximum}"
        elif param.minimum is not None:
            values += f" ≥ {param.minimum}"
        elif param.maximum is not None:
            values += f" ≤ {param.maximum}"
    if param.required:
        return f"{values}, required"
    if param.default is None:
        return f"{values}, optional"
    default = param.default if isinstance(param.default, str) else json.dumps(param.default)
    return f"{values}, default `{default}`"


def _documented_params(task: str, cell: str, problems: list[str]) -> dict[str, str]:
    if cell == "—":
        return {}
    params = {}
    for part in cell.split(";"):
        match = re.fullmatch(r"`([a-z_0-9]+)`: (.+)", part.strip())
        if match is None:
            problems.append(f"task {task}: {part.strip()!r} is not written `name`: values, "
                            "then required, optional or default `value`")
            continue
        params[match.group(1)] = match.group(2)
    return params


def test_the_task_table_lists_every_task_with_its_parameters():
    rows = _table("task")
    problems = _difference("task", [_code(row[0]) for row in rows], set(protocol.TASKS))
    for row in rows:
        spec = protocol.TASKS.get(_code(row[0]))
        if spec is None:
            continue
        if len(row) < 4:
            problems.append(f"task {spec.name}: the row needs the columns task, capability, "
                            "parameters, idempotent")
            continue
        capability, cell, idempotent = row[1:4]
        needed = spec.capability.value if spec.capability else "—"  # none: on the gateway
        if _code(capability) != needed:
            problems.append(f"task {spec.name}: capability {capability!r}, the contract's is "
                            f"{needed!r}")
        if idempotent != ("yes" if spec.idempotent else "no"):
            problems.append(f"task {spec.name}: idempotent {idempotent!r}, the contract says "
                            f"{spec.idempotent}")
        documented = _documented_params(spec.name, cell, problems)
        problems += _difference(f"task {spec.name}: parameter", list(documented),
                                set(spec.params))
        for name, param in spec.params.items():
            if name in documented and documented[name] != _describe(param):
                problems.append(f"task {spec.name}: parameter {name} is {documented[name]!r} "
                                f"in the doc, {_describe(param)!r} in the contract")
    assert not problems, "\n".join(problems)


def test_a_parameter_is_described_from_its_schema():
    assert _describe(protocol.TASKS["power.ensure"].params["state"]) == \
        "`on` | `off`, required"
    assert _describe(protocol.TASKS["boot.override"].params["firmware_mode"]) == \
        "`uefi` | `legacy`, optional"
    assert _describe(protocol.TASKS["power.ensure"].params["graceful"]) == \
        "boolean, default `true`"
    assert _describe(protocol.TASKS["sel.collect"].params["limit"]) == \
        "integer 1–10000, default `100`"
    assert _describe(Param(ParamType.INTEGER, minimum=0)) == "integer ≥ 0, required"


def test_the_signed_example_verifies_with_the_key_the_doc_gives():
    from edge_gateway.trust import PlanVerifier

    text = DOC.read_text()
    section = text.split("## Signatures", 1)[1].split("\n## ", 1)[0]
    example = json.loads(re.search(r"```json\n(.*?)```", section, flags=re.DOTALL).group(1))
    (key,) = re.findall(r"signed\s+by the key `([A-Za-z0-9+/=]+)`", section)
    canonical = re.search(r"```\n(\{.*?\})\n```", section, flags=re.DOTALL).group(1)
    unsigned, signature = protocol.split_signature(example)
    assert canonical.encode() == protocol.signed_bytes(unsigned, signature.key,
                                                       signature.expires)
    verified = PlanVerifier([key]).verify(example, now=example["ts"])
    assert protocol.decode_object(verified, _topic_of(example["kind"])).KIND == "cancel"
