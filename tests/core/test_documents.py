"""Documents read strictly: what json and PyYAML would settle quietly is an error naming the source."""

from __future__ import annotations

import codecs

import pytest

from dispatch_pipeline.core.documents import (
    DocumentError,
    UnderflowedNumber,
    parse_json,
    parse_yaml,
    read_text,
)


def test_a_key_repeated_in_a_json_object_is_refused() -> None:
    with pytest.raises(DocumentError, match=r"^req\.json repeats the key 'pv_kw' in one object$"):
        parse_json('{"bess": {"soc_min": 0.1}, "pv_kw": [1], "pv_kw": [2]}', "req.json")


def test_the_same_key_in_different_json_objects_is_fine() -> None:
    assert parse_json('{"a": {"x": 1}, "b": {"x": 2}}', "doc") == {"a": {"x": 1}, "b": {"x": 2}}


def test_a_key_repeated_in_a_yaml_mapping_names_both_lines() -> None:
    text = "sites:\n  - site_id: A\n    pv_kwp: 500\n    pv_kwp: 5\n"
    with pytest.raises(DocumentError, match=r"found key 'pv_kwp' again \(first at line 3\)") as caught:
        parse_yaml(text, "sites.yaml")
    assert str(caught.value).startswith("sites.yaml is not valid YAML or JSON")
    assert "line 4" in str(caught.value)


def test_yaml_merge_keys_may_still_override_what_they_merge() -> None:
    text = "base: &base {buy: 0.2, sell: 0.1}\npeak:\n  <<: *base\n  buy: 0.5\n"
    assert parse_yaml(text, "doc")["peak"] == {"buy": 0.5, "sell": 0.1}


@pytest.mark.parametrize("parse", [parse_json, parse_yaml])
def test_nesting_past_the_recursion_limit_is_an_error_not_a_crash(parse) -> None:
    with pytest.raises(DocumentError, match="nested too deeply"):
        parse("[" * 100_000, "doc")


@pytest.mark.parametrize("parse_document", [parse_json, parse_yaml])
def test_an_integer_past_the_digit_limit_is_a_value_its_field_refuses_by_name(parse_document) -> None:
    # The document stays readable, so that validation names the field the number was sent in.
    parsed = parse_document('{"n": -%s, "m": 7}' % ("9" * 5000), "doc")
    assert repr(parsed["n"]) == "an integer of 5000 digits" and parsed["m"] == 7


@pytest.mark.parametrize("parse_document", [parse_json, parse_yaml])
@pytest.mark.parametrize("literal", ["1e-400", "-1e-400", "0.0001e-330", "2.4E-324"])
def test_a_number_a_float_holds_only_as_zero_is_a_value_its_field_refuses_by_name(parse_document, literal) -> None:
    # Read as 0, 1e-400 would make a weight of 0 out of one the contract's rules refuse.
    [value] = parse_document(f"[{literal}]", "doc")
    assert isinstance(value, UnderflowedNumber)
    assert str(value) == f"{literal}, too close to 0 for a number to hold: write 0"


@pytest.mark.parametrize("parse_document", [parse_json, parse_yaml])
def test_zero_written_any_way_and_the_smallest_floats_are_numbers(parse_document) -> None:
    values = parse_document("[0.0, -0.0, 0e-400, 0.000e5, 5e-324, 1e-320]", "doc")
    assert values == [0.0, -0.0, 0.0, 0.0, 5e-324, 1e-320]
    assert all(type(value) is float for value in values)


def test_text_that_is_not_utf8_names_the_line_and_byte(tmp_path) -> None:
    path = tmp_path / "site.yaml"
    path.write_bytes("site_id: X\nname: Café\n".encode("latin-1"))
    with pytest.raises(DocumentError, match=r"site\.yaml: not UTF-8 text \(line 2, byte 20: 0xe9\)$"):
        read_text(str(path))


def test_a_byte_order_mark_is_read_past_and_counted_in_the_offset(tmp_path) -> None:
    path = tmp_path / "site.yaml"
    path.write_bytes(codecs.BOM_UTF8 + b"site_id: X\n")
    assert read_text(str(path)) == "site_id: X\n"
    path.write_bytes(codecs.BOM_UTF8 + "site_id: X\nname: Café\n".encode("latin-1"))
    with pytest.raises(DocumentError, match=r"not UTF-8 text \(line 2, byte 23: 0xe9\)$"):
        read_text(str(path))


def test_a_byte_order_mark_is_not_part_of_the_text(tmp_path) -> None:
    path = tmp_path / "site.yaml"
    path.write_bytes("\ufeffname: Café\n".encode())
    assert parse_yaml(read_text(str(path)), str(path)) == {"name": "Café"}


def test_a_missing_file_is_named(tmp_path) -> None:
    with pytest.raises(DocumentError, match=r"absent\.yaml: cannot read \(No such file or directory\)$"):
        read_text(str(tmp_path / "absent.yaml"))


@pytest.mark.parametrize(
    ("scalar", "value"),
    [
        ("1000", 1000), ("-7", -7), ("+7", 7), ("0123", 123), ("1.5", 1.5), (".5", 0.5), ("5.", 5.0),
        ("1e3", 1000.0), ("-2.5E-3", -0.0025), ("true", True), ("False", False), ("~", None), ("null", None),
        # YAML 1.1 forms PyYAML would turn into numbers, booleans or dates: text here.
        ("16:40", "16:40"), ("0x1F4", "0x1F4"), ("0o17", "0o17"), ("4_00", "4_00"), ("no", "no"),
        ("on", "on"), ("2024-03-15", "2024-03-15"),
    ],
)
def test_yaml_plain_scalars_are_numbers_only_when_decimal(scalar, value) -> None:
    parsed = parse_yaml(f"key: {scalar}\n", "doc.yaml")["key"]
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize(
    ("scalar", "value"),
    [
        ("!!int 12", 12), ("!!int +5", 5), ("!!float .5", 0.5), ("!!float 12", 12.0),
        # Tagged as numbers, written as no plain number is: text, which a numeric field refuses
        # as written (not as "an integer of 3 digits", nor as 1000).
        ('!!int "abc"', "abc"), ("!!int 0o17", "0o17"), ("!!int '0x1F4'", "0x1F4"), ("!!float 1_000", "1_000"),
    ],
)
def test_yaml_scalars_tagged_as_numbers_are_numbers_only_when_written_as_plain_ones(scalar, value) -> None:
    parsed = parse_yaml(f"key: {scalar}\n", "doc.yaml")["key"]
    assert parsed == value and type(parsed) is type(value)
