"""JSON-Schema checks of the YAML config files (hvpl/schemas/*.schema.yaml) with one-line messages.

jsonschema's own messages dump the failing (sub)schema; here an error names the key, its value and what was
expected, worded from the schema (``train.lr = 0: expected a number > 0``), or the missing / unknown keys.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, validators

from hvpl.utils.errors import HVPLError

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas"

# JSON Schema counts 2.0 as an integer; a count written as 2.0 is a typo here, as is true for 1.
_TYPES = Draft202012Validator.TYPE_CHECKER.redefine(
    "integer", lambda _checker, x: isinstance(x, int) and not isinstance(x, bool))
_Validator = validators.extend(Draft202012Validator, type_checker=_TYPES)


@lru_cache(maxsize=None)
def load_schema(name: str | Path) -> dict:
    """``hvpl/schemas/<name>.schema.yaml`` (or the schema file ``name`` if a Path) as a dict, checked once to be
    a valid schema."""
    path = name if isinstance(name, Path) else SCHEMA_DIR / f"{name}.schema.yaml"
    schema = yaml.safe_load(path.read_text())
    _Validator.check_schema(schema)
    return schema


def schema_problem(data: Any, name: str | Path) -> str | None:
    """The first way ``data`` breaks schema ``name`` in one line (``<key> = <value>: expected ...``), or None."""
    schema = load_schema(name)
    error = next(iter(_Validator(schema).iter_errors(data)), None)
    return None if error is None else _describe(error, schema, data)


def check_schema(data: Any, name: str | Path, where: str) -> None:
    """HVPLError ``<where>: <problem>`` when ``data`` breaks schema ``name`` (see :func:`schema_problem`)."""
    problem = schema_problem(data, name)
    if problem is not None:
        raise HVPLError(f"{where}: {problem}")


def _dotted(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _resolve(schema: dict, root: dict) -> dict:
    ref = schema.get("$ref")
    return root["$defs"][ref.rsplit("/", 1)[-1]] if ref else schema


def _at(root: dict, data: Any, keys: list[str]) -> tuple[dict, Any]:
    """The schema and the value of the key ``keys`` (a path of mapping keys) in ``data``."""
    schema, value = root, data
    for key in keys:
        schema = _resolve(_resolve(schema, root).get("properties", {}).get(key, {}), root)
        value = value[key]
    return _resolve(schema, root), value


def _describe(error, root: dict, data: Any) -> str:
    path = list(error.absolute_path)
    if error.validator in ("required", "additionalProperties"):
        prefix = f"{_dotted(path)}: " if path else ""
        if error.validator == "required":
            missing = [k for k in error.validator_value if k not in error.instance]
            return f"{prefix}missing keys {missing}"
        known = set(error.schema.get("properties", {}))
        unknown = sorted(k for k in error.instance if k not in known)
        return f"{prefix}unknown keys {unknown} (known: {', '.join(error.schema.get('properties', {}))})"
    # an item of a list: report the whole list against the list's schema
    keys = path[:max((i + 1 for i, p in enumerate(path) if isinstance(p, str)), default=0)]
    schema, value = _at(root, data, keys)
    hint = ""
    if isinstance(value, str) and "number" in str(schema.get("type")) and _is_float_text(value):
        hint = " (YAML 1.1 reads an exponent without a dot as a string: write e.g. 1.0e-4)"
    return f"{_dotted(keys) or 'top level'} = {value!r}: expected {expected(schema, root)}{hint}"


def _is_float_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _bounds(s: dict) -> str:
    low = ("[", s["minimum"]) if "minimum" in s else ("(", s["exclusiveMinimum"]) if "exclusiveMinimum" in s else None
    high = ("]", s["maximum"]) if "maximum" in s else (")", s["exclusiveMaximum"]) if "exclusiveMaximum" in s else None
    if low and high:
        return f" in {low[0]}{low[1]}, {high[1]}{high[0]}"
    if low:
        return f" {'>=' if low[0] == '[' else '>'} {low[1]}"
    return f" {'<=' if high[0] == ']' else '<'} {high[1]}" if high else ""


_NOUNS = {"integer": ("an integer", "integers"), "number": ("a number", "numbers"), "string": ("a string", "strings"),
          "boolean": ("true/false", "true/false values"), "object": ("a mapping", "mappings"),
          "array": ("a list", "lists")}


def expected(schema: dict, root: dict, plural: bool = False) -> str:
    """What ``schema`` accepts, in words: ``null or a non-empty list of distinct integers``."""
    s = _resolve(schema, root)
    types = s.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    main = [t for t in types if t != "null"]
    if "enum" in s:
        text = f"one of {', '.join(map(str, s['enum']))}"
    elif main == ["array"]:
        n, m = s.get("minItems", 0), s.get("maxItems")
        size = f"a list of {n}" if n == m else ("a non-empty list of" if n >= 1 else "a list of")
        items = expected(s.get("items", {}), root, plural=True) if s.get("items") else "values"
        text = f"{size}{' distinct' if s.get('uniqueItems') else ''} {items}"
    elif main:
        text = " or ".join(_NOUNS[t][plural] for t in main) + _bounds(s)
        if s.get("minLength"):
            text = f"a non-empty {text.removeprefix('a ')}"
    else:
        text = "any value"
    return f"null or {text}" if "null" in types else text
