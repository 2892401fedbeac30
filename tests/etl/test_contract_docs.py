"""docs/contracts.md: every YAML example is a contract the code accepts, or refuses as the doc says.

A ```yaml block with a `dataset` key is a complete contract. One without is a fragment: it is merged
into a minimal contract (`columns` and `derived` added to its own) and checked the same way. A block
whose last non-blank line before it is `<!-- invalid: TEXT -->` must be refused with a ContractError
containing TEXT. Every key of the contract models must be documented.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from pydantic import BaseModel

from include.etl.contract.model import (
    ROW_EXPECTATIONS,
    Column,
    ColumnType,
    Contract,
    ContractError,
    CsvDialect,
    Derived,
    RowCountBetween,
    Severity,
    TimestampParts,
    parse_contract,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "contracts.md"
TEXT = DOC.read_text(encoding="utf-8")

# The contract a fragment is merged into.
BASE: dict[str, Any] = {
    "dataset": "example",
    "table": "analytics.example",
    "key": "id",
    "columns": {"id": {"type": "text", "required": True}},
}

_FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_INVALID = re.compile(r"^<!-- invalid: (?P<text>.+?) -->$")


@dataclass(frozen=True)
class Block:
    line: int  # line of the opening fence in docs/contracts.md
    body: str
    invalid: str | None  # the error text the doc says the example is refused with


def _fences(text: str) -> list[tuple[int, str, str, str]]:
    """(line, info string, body, last non-blank line before the fence) of every fenced block."""
    found = []
    for m in _FENCE.finditer(text):
        before = text[: m.start()].rstrip().splitlines()
        found.append((text.count("\n", 0, m.start()) + 1, m.group("info").strip(), m.group("body"), before[-1]))
    return found


def yaml_blocks(text: str) -> list[Block]:
    blocks = []
    for line, info, body, previous in _fences(text):
        if info == "yaml":
            marker = _INVALID.match(previous.strip())
            blocks.append(Block(line, body, marker.group("text") if marker else None))
    return blocks


def as_contract(doc: dict[str, Any]) -> dict[str, Any]:
    """A complete contract as is; a fragment merged into BASE."""
    if "dataset" in doc:
        return doc
    merged = copy.deepcopy(BASE)
    for key, value in doc.items():
        if key in ("columns", "derived") and isinstance(value, dict):
            merged[key] = {**merged.get(key, {}), **value}
        else:
            merged[key] = value
    return merged


def check(block: Block) -> None:
    """Raise (ContractError or AssertionError) if the example does not behave as the doc says."""
    doc = yaml.safe_load(block.body)
    assert isinstance(doc, dict), f"docs/contracts.md:{block.line}: a YAML example must be a mapping"
    source = f"docs/contracts.md:{block.line}"
    if block.invalid is None:
        parse_contract(as_contract(doc), source)  # a ContractError names the line, the key and the problem
        return
    error: str | None = None
    try:
        parse_contract(as_contract(doc), source)
    except ContractError as exc:
        error = str(exc)
    assert error is not None, f"{source}: expected an error containing {block.invalid!r}, it parsed"
    assert block.invalid in error, f"{source}: expected an error containing {block.invalid!r}, got: {error}"


BLOCKS = yaml_blocks(TEXT)


@pytest.mark.parametrize("block", BLOCKS, ids=[f"line{b.line}" for b in BLOCKS])
def test_every_yaml_example_behaves_as_documented(block: Block) -> None:
    check(block)


def test_the_doc_has_complete_fragment_and_invalid_examples() -> None:
    docs = [yaml.safe_load(b.body) for b in BLOCKS]
    assert sum("dataset" in d for d in docs) >= 1
    assert sum("dataset" not in d for d in docs) >= 5
    assert sum(b.invalid is not None for b in BLOCKS) >= 5


def test_every_invalid_marker_introduces_a_yaml_block() -> None:
    markers = len(re.findall(r"^<!-- invalid: ", TEXT, re.MULTILINE))
    assert markers == sum(b.invalid is not None for b in BLOCKS)


def test_examples_are_fenced_as_yaml_or_text() -> None:
    infos = {info for _, info, _, _ in _fences(TEXT)}
    assert infos <= {"yaml", "text"}, f"fence every YAML example as ```yaml: {sorted(infos)}"


# --- the check can fail ------------------------------------------------------------------------


def test_a_typo_in_an_example_fails_the_check() -> None:
    complete = next(b for b in BLOCKS if b.invalid is None and "dataset:" in b.body and "required:" in b.body)
    check(complete)
    typo = Block(complete.line, complete.body.replace("required:", "requird:", 1), None)
    with pytest.raises(ContractError, match=r"unknown key 'requird' \(did you mean 'required'\?\)"):
        check(typo)
    fragment = next(b for b in BLOCKS if b.invalid is None and "dataset:" not in b.body and "type: text" in b.body)
    with pytest.raises(ContractError, match="Input should be"):
        check(Block(fragment.line, fragment.body.replace("type: text", "type: txt", 1), None))


def test_a_wrong_expected_error_fails_the_check() -> None:
    invalid = next(b for b in BLOCKS if b.invalid is not None)
    check(invalid)
    with pytest.raises(AssertionError, match="expected an error containing"):
        check(Block(invalid.line, invalid.body, "an error the code never raises"))
    valid = next(b for b in BLOCKS if b.invalid is None)
    with pytest.raises(AssertionError, match="it parsed"):
        check(Block(valid.line, valid.body, "anything"))


# --- every key is documented ---------------------------------------------------------------------


def _keys(model: type[BaseModel]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()} - {"name"}


def _literals(annotation: Any) -> set[str]:
    return {str(v) for v in get_args(annotation)}


EXPECTATIONS = (*ROW_EXPECTATIONS, RowCountBetween)
DOCUMENTED = sorted(
    set().union(
        *(_keys(m) for m in (Contract, CsvDialect, Column, TimestampParts, Derived, *EXPECTATIONS)),
        *(_literals(m.model_fields["expectation"].annotation) for m in EXPECTATIONS),
        _literals(ColumnType),
        _literals(Severity),
        _literals(Contract.model_fields["on_source_delete"].annotation),
        _literals(Contract.model_fields["schema_evolution"].annotation),
    )
)


@pytest.mark.parametrize("name", DOCUMENTED)
def test_every_contract_key_and_value_is_documented(name: str) -> None:
    assert f"`{name}`" in TEXT, f"docs/contracts.md does not mention `{name}`"
