"""docs/api-reference.md, generated from the CRDs in crds/: the one source of the API's
field descriptions, types, defaults and validation rules is the CRD schemas (what
`kubectl explain` shows), so the reference is rendered from them and never edited by hand.
tests/unit/test_api_reference.py fails when the checked-in file differs from what this
renders (then run `hack/apidocs`).

    python3 -m testbed.apidocs [--check]    writes docs/api-reference.md (or only compares)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"
OUTPUT = ROOT / "docs" / "api-reference.md"
ORDER = ("InGuestCluster", "ServiceGroup", "Switchover")  # the order a reader meets them

Schema = Mapping[str, Any]


def _cell(text: str) -> str:
    """Text that stays in one Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _type(schema: Schema) -> str:
    kind = str(schema.get("type") or ("any" if schema.get("x-kubernetes-int-or-string") is None
                                      else "int or string"))
    if kind == "array":
        return f"[]{_type(schema.get('items') or {})}"
    if kind == "object" and "additionalProperties" in schema:
        return f"map[string]{_type(schema['additionalProperties'] or {})}"
    if schema.get("x-kubernetes-int-or-string"):
        return "int or string"
    return kind


def _rules(schema: Schema) -> str:
    """Defaults and validation, as short phrases."""
    out = []
    if "default" in schema:
        out.append(f"default `{json.dumps(schema['default'], sort_keys=True)}`")
    if "enum" in schema:
        out.append("one of " + ", ".join(f"`{v}`" for v in schema["enum"]))
    for key, word in (("minimum", "≥"), ("maximum", "≤")):
        if key in schema:
            out.append(f"{word} {schema[key]}")
    for key, word in (("minLength", "length ≥"), ("maxLength", "length ≤"),
                      ("minItems", "items ≥"), ("maxItems", "items ≤")):
        if key in schema:
            out.append(f"{word} {schema[key]}")
    if "pattern" in schema:
        out.append(f"pattern `{schema['pattern']}`")
    if "format" in schema:
        out.append(f"format {schema['format']}")
    if schema.get("x-kubernetes-list-type"):
        out.append(f"list type {schema['x-kubernetes-list-type']}")
    return "; ".join(out)


def _fields(schema: Schema, prefix: str, required: frozenset[str] = frozenset()
            ) -> Iterator[tuple[str, Schema, bool]]:
    """Every field under `schema`, depth first, with its dotted path."""
    props: Mapping[str, Schema] = schema.get("properties") or {}
    for name, sub in props.items():
        path = f"{prefix}.{name}" if prefix else name
        yield path, sub, name in required
        child = sub.get("items") if sub.get("type") == "array" else sub
        child = child or {}
        below = f"{path}[]" if sub.get("type") == "array" else path
        yield from _fields(child, below, frozenset(child.get("required") or ()))


def _validations(schema: Schema, prefix: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """The CEL rules (x-kubernetes-validations) at `schema` and under it."""
    for rule in schema.get("x-kubernetes-validations") or ():
        yield prefix or "(the object)", rule
    for path, sub, _ in _fields(schema, prefix):
        for rule in sub.get("x-kubernetes-validations") or ():
            yield path, rule


def _section(crd: Mapping[str, Any]) -> list[str]:
    spec = crd["spec"]
    names = spec["names"]
    (version,) = [v for v in spec["versions"] if v.get("storage")]
    short = ", ".join(f"`{n}`" for n in names.get("shortNames") or ()) or "-"
    root = version["schema"]["openAPIV3Schema"]
    lines = [f"## {names['kind']}", "",
             _cell(str(root.get("description") or "")), "",
             "| | |", "|---|---|",
             f"| apiVersion | `{spec['group']}/{version['name']}` |",
             f"| scope | {spec['scope']} |",
             f"| plural | `{names['plural']}` |",
             f"| short names | {short} |",
             f"| subresources | {', '.join(sorted(version.get('subresources') or {})) or '-'} |",
             ""]
    columns = version.get("additionalPrinterColumns") or ()
    if columns:
        lines += ["`kubectl get` columns (`-o wide` adds those of priority 1):", "",
                  "| column | from | priority | meaning |", "|---|---|---|---|"]
        lines += [f"| {c['name']} | `{c['jsonPath']}` | {c.get('priority', 0)} | "
                  f"{_cell(str(c.get('description') or ''))} |" for c in columns]
        lines.append("")
    for part in ("spec", "status"):
        schema = (root.get("properties") or {}).get(part)
        if not schema:
            continue
        lines += [f"### {names['kind']}.{part}", ""]
        if schema.get("description"):
            lines += [_cell(str(schema["description"])), ""]
        lines += ["| field | type | required | rules | description |",
                  "|---|---|---|---|---|"]
        for path, sub, required in _fields(schema, "", frozenset(schema.get("required") or ())):
            lines.append(f"| `{path}` | {_type(sub)} | {'yes' if required else ''} | "
                         f"{_cell(_rules(sub))} | {_cell(str(sub.get('description') or ''))} |")
        lines.append("")
        rules = list(_validations(schema, ""))
        if rules:
            lines += [f"Rules the apiserver enforces on `{part}` (CEL):", "",
                      "| where | rule | message |", "|---|---|---|"]
            lines += [f"| `{where}` | `{_cell(str(r['rule']))}` | "
                      f"{_cell(str(r.get('message') or ''))} |" for where, r in rules]
            lines.append("")
    return lines


def render() -> str:
    crds = [yaml.safe_load(p.read_text()) for p in sorted(CRDS.glob("*.yaml"))]
    crds.sort(key=lambda c: ORDER.index(c["spec"]["names"]["kind"])
              if c["spec"]["names"]["kind"] in ORDER else len(ORDER))
    lines = ["# API reference", "",
             "<!-- Generated by hack/apidocs from crds/*.yaml: do not edit by hand. -->", "",
             "guestha's custom resources, group `guestha.io`. Every field below is from the CRD "
             "schemas the apiserver enforces (`kubectl explain <kind>.<field>` shows the same "
             "descriptions). Status fields are written by the operator only.", ""]
    lines += [f"- [{c['spec']['names']['kind']}](#{c['spec']['names']['kind'].lower()})"
              for c in crds]
    lines.append("")
    for crd in crds:
        lines += _section(crd)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="only compare with docs/api-reference.md; exit 1 when stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if OUTPUT.read_text() != text:
            print(f"{OUTPUT} is stale: run hack/apidocs", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
