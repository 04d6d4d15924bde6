"""JSON and YAML documents read strictly: what the parsers would settle quietly is an error.

Both parsers keep the last of two equal keys in a mapping, so `pv_kwp: 500` followed by
`pv_kwp: 5` would register 5 without a word; here it names the key and where it repeats. Plain
YAML scalars are numbers only when decimal, booleans only when true or false (YAML 1.2's core
schema, without its hex and octal numbers), and never dates: PyYAML's YAML 1.1 rules would read
`16:40` as the number 1000, `0x1F4` as 500, `4_00` as 400, `no` as false and `2024-03-15` as a
date; here those stay text, which a numeric field then refuses as written (and `0123` is 123, as
in YAML 1.2, not the octal 83). A scalar tagged as a number (`!!int 0x1F4`, `!!float 1_000`) is
a number only when written as the plain ones are; otherwise it stays text too. Text
that is not UTF-8 and nesting deeper than the parser's recursion are errors naming the source,
never a traceback. A JSON integer past Python's 4,300-digit limit is read as an `OversizedInteger`,
and a number a float can only hold as 0 (`1e-400`, which would make a weight of 0 out of one the
rules refuse) as an `UnderflowedNumber`: the field either stands in refuses it by name.
"""

from __future__ import annotations

import codecs
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml


class DocumentError(ValueError):
    """A document that cannot be read or parsed; the message names its source."""


def source_name(source: str) -> str:
    """How messages name a document: its path, or "stdin" for "-"."""
    return "stdin" if source == "-" else source


def read_text(source: str) -> str:
    """The UTF-8 text of the file `source`, or of standard input for "-"."""
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise DocumentError(f"{source_name(source)}: cannot read ({exc.strerror or exc})") from None
    try:
        return decode_utf8(data)
    except DocumentError as exc:
        raise DocumentError(f"{source_name(source)}: {exc}") from None


def decode_utf8(data: bytes) -> str:
    """`data` as UTF-8 text, without a leading byte order mark; DocumentError names the first bad
    byte, its offset counted in `data` and the line it is on."""
    text = data.removeprefix(codecs.BOM_UTF8)
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start + len(data) - len(text)
        line = data.count(b"\n", 0, offset) + 1
        raise DocumentError(f"not UTF-8 text (line {line}, byte {offset}: {data[offset]:#04x})") from None


def json_type_name(value: Any) -> str:
    """What JSON calls the type of a parsed value: "array", not Python's "list"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float | UnreadableNumber):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


class UnreadableNumber:
    """A number in a document that Python cannot hold as written: a value no field accepts,
    shown in the error that names the field instead of failing the whole document."""

    def __init__(self, shown: str):
        self.shown = shown

    def __repr__(self) -> str:
        return self.shown

    __str__ = __repr__


class OversizedInteger(UnreadableNumber):
    """A JSON integer with more digits than int() reads."""

    def __init__(self, digits: int):
        super().__init__(f"an integer of {digits} digits")


_DECIMAL_INTEGER = re.compile(r"^[-+]?[0-9]+$")


def _integer(text: str) -> int | OversizedInteger | str:
    if not _DECIMAL_INTEGER.match(text):
        return text  # tagged !!int in YAML, but no decimal integer: a numeric field refuses it as written
    try:
        return int(text)
    except ValueError:  # past sys.get_int_max_str_digits()
        return OversizedInteger(len(text.lstrip("-+")))


class UnderflowedNumber(UnreadableNumber):
    """A number written with a digit other than 0 that a float rounds to 0 (or -0)."""

    def __init__(self, text: str):
        super().__init__(f"{text}, too close to 0 for a number to hold: write 0")


_NONZERO_MANTISSA = re.compile(r"^[-+]?[0.]*[1-9]")


def _float(text: str) -> float | UnderflowedNumber:
    value = float(text)
    if value == 0 and _NONZERO_MANTISSA.match(text):
        return UnderflowedNumber(text)
    return value


def parse_json(text: str | bytes, source: str) -> Any:
    """JSON text, or bytes in UTF-8/16/32; `source` names it in errors."""
    source = source_name(source)
    try:
        return json.loads(text, object_pairs_hook=_unique_keys, parse_int=_integer, parse_float=_float)
    except json.JSONDecodeError as exc:
        raise DocumentError(
            f"{source} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    except _DuplicateKey as exc:
        raise DocumentError(f"{source} repeats the key {exc.key!r} in one object") from None
    except RecursionError:
        raise DocumentError(f"{source} is not usable JSON: nested too deeply") from None
    except ValueError as exc:  # bytes in no Unicode encoding
        raise DocumentError(f"{source} is not usable JSON: {exc}") from None


def parse_yaml(text: str, source: str) -> Any:
    """YAML (and so JSON) through the safe loader, refusing duplicated keys."""
    source = source_name(source)
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        raise DocumentError(f"{source} is not valid YAML or JSON: {exc}") from None
    except RecursionError:
        raise DocumentError(f"{source} is not usable YAML: nested too deeply") from None
    except ValueError as exc:
        raise DocumentError(f"{source} is not usable YAML: {exc}") from None


class _DuplicateKey(Exception):
    def __init__(self, key: str):
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    mapping: dict[str, Any] = {}
    for key, value in pairs:
        if key in mapping:
            raise _DuplicateKey(key)
        mapping[key] = value
    return mapping


class _StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` merges keys by design
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.setdefault(key, key_node.start_mark)
            except TypeError:
                continue  # unhashable: construct_mapping's own error names it
            if first is not key_node.start_mark:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"found key {key!r} again (first at line {first.line + 1})", key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int | OversizedInteger | str:
        return _integer(self.construct_scalar(node))  # "0123" is 123, not octal 83

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float | UnderflowedNumber | str:
        text = self.construct_scalar(node)
        if not _YAML_FLOAT.match(text):
            return text  # tagged !!float, but not written as a plain number is: refused as written
        value = super().construct_yaml_float(node)
        return UnderflowedNumber(text) if value == 0 and _NONZERO_MANTISSA.match(text) else value


_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag not in (_INT, _FLOAT, _BOOL, _TIMESTAMP)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_YAML_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
_StrictLoader.add_implicit_resolver(_INT, _DECIMAL_INTEGER, list("-+0123456789"))
_StrictLoader.add_implicit_resolver(_FLOAT, _YAML_FLOAT, list("-+.0123456789"))
_StrictLoader.add_constructor(_INT, _StrictLoader.construct_yaml_int)
_StrictLoader.add_constructor(_FLOAT, _StrictLoader.construct_yaml_float)
