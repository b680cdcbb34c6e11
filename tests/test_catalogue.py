"""Rule ids are a public contract: the in-repository catalogue (docs/findings.md) is generated
from the registry and cannot drift from it, README's table names exactly the registered ids,
and each rule is documented."""

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from rnndoctor.cli import cli
from rnndoctor.rules import FAMILIES, all_rules
from rnndoctor.rules.catalogue import REGENERATE, SECTIONS, doc_sections
from rnndoctor.rules.registry import rule

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = ROOT / "docs" / "findings.md"
README = ROOT / "README.md"


def generated() -> str:
    result = CliRunner().invoke(cli, ["rules", "--markdown"])
    assert result.exit_code == 0, result.output
    return result.output


def test_docs_findings_md_is_the_generated_catalogue():
    assert CATALOGUE.is_file(), f"docs/findings.md is missing; generate it with `{REGENERATE}`"
    assert CATALOGUE.read_text(encoding="utf-8") == generated(), (
        f"docs/findings.md differs from `rnndoctor rules --markdown`; regenerate it with `{REGENERATE}` "
        "(it must not be edited by hand)"
    )


def test_the_catalogue_says_it_is_generated():
    head = CATALOGUE.read_text(encoding="utf-8").splitlines()[:3]
    assert any("rnndoctor rules --markdown" in line and "do not edit by hand" in line for line in head)


def catalogue_table(text: str) -> dict[str, tuple[str, str]]:
    """id -> (family, default severity) from the catalogue's table."""
    return {m[0]: (m[1], m[2]) for m in re.findall(r"^\| \[`([a-z0-9-]+)`\]\(#\1\) \| (\w+) \| (\w+) \|", text, flags=re.M)}


def test_every_rule_is_catalogued_and_every_catalogued_id_has_a_rule():
    text = CATALOGUE.read_text(encoding="utf-8")
    table = catalogue_table(text)
    assert len(table) >= 20
    specs = {s.id: s for s in all_rules()}
    assert set(table) == set(specs), {"not catalogued": set(specs) - set(table), "no rule": set(table) - set(specs)}
    for rid, (family, severity) in table.items():
        assert (family, severity) == (specs[rid].family, specs[rid].severity.value), rid
        assert re.search(rf"^### {re.escape(rid)}$", text, flags=re.M), f"no section for {rid}"
    assert [f for f in FAMILIES if f"## {f}" in text] == list(FAMILIES)


def test_readme_table_names_exactly_the_registered_ids_with_their_default_severity():
    text = README.read_text(encoding="utf-8")
    table = text[text.index("| id | severity | what it says |"):].split("\n\n", 1)[0]  # the findings table only
    rows = dict(re.findall(r"^\| `([a-z0-9-]+)` \| ([^|]+)\|", table, flags=re.M))
    specs = {s.id: s for s in all_rules()}
    assert set(rows) == set(specs), {"not in README": set(specs) - set(rows), "no rule": set(rows) - set(specs)}
    for rid, cell in rows.items():
        assert cell.split()[0] == specs[rid].severity.value, (rid, cell)
    assert "docs/findings.md" in README.read_text(encoding="utf-8")


def test_every_rule_documents_itself():
    for spec in all_rules():
        sections = doc_sections(spec)
        for section in SECTIONS:
            assert section in sections and sections[section][1].strip(), (spec.id, section)


def test_duplicate_ids_are_refused():
    spec = all_rules()[0]
    with pytest.raises(ValueError, match="duplicate rule id"):
        rule(spec.id, spec.severity, signals=(), fix=spec.fix)(lambda run: iter(()))
