"""The docs name code that exists: every `path.py: symbol` in docs/architecture.md is defined there, and every
path it or the README names (with a folder) is in the tree."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "src" / "steer_away"
DOCS = [ROOT / "docs" / "architecture.md", ROOT / "README.md"]
REFERENCE = re.compile(r"`([\w./-]+\.py): ([\w.]+)")
EXAMPLES = {"steering/methods/token_bias.py"}  # the file "Adding a method" tells you to write
PATH = re.compile(r"`([\w.-]+(?:/[\w.-]+)+\.(?:py|toml|jsonl|md|sh))`")


def resolve(path: str) -> Path | None:
    """A path as the docs write it: from the package, the repository or the evaluation package."""
    for base in (PACKAGE, ROOT, ROOT / "src", PACKAGE / "evaluation"):
        if (base / path).is_file():
            return base / path
    return None


def defined(source: Path, symbol: str) -> bool:
    """`name` or `Class.member` is defined at the top of `source` (def, class or assignment)."""
    head, *rest = symbol.split(".")
    body = ast.parse(source.read_text(encoding="utf-8")).body
    for _ in range(2):
        found = None
        for node in body:
            names = [node.name] if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) else \
                [t.id for t in getattr(node, "targets", [getattr(node, "target", None)]) if isinstance(t, ast.Name)]
            if head in names:
                found = node
        if found is None:
            return False
        if not rest:
            return True
        if not isinstance(found, ast.ClassDef):
            return False
        head, *rest = rest
        body = found.body
    return False


def references(doc: Path) -> list[tuple[str, str]]:
    return REFERENCE.findall(doc.read_text(encoding="utf-8"))


def test_every_path_symbol_the_architecture_names_exists():
    refs = references(DOCS[0])
    assert len(refs) >= 10  # the doc does point into the code
    missing = [f"{path}: {symbol}" for path, symbol in refs
               if (source := resolve(path)) is None or not defined(source, symbol)]
    assert missing == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_every_path_the_docs_name_is_in_the_tree(doc):
    paths = PATH.findall(doc.read_text(encoding="utf-8"))
    assert [p for p in paths if resolve(p) is None and p not in EXAMPLES] == []


def test_the_checks_catch_a_stale_reference(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("class A:\n    def run(self): ...\n\nLIMIT = 3\n")
    assert defined(source, "A.run") and defined(source, "LIMIT")
    assert not defined(source, "A.walk") and not defined(source, "summarise") and not defined(source, "LIMIT.x")
    assert resolve("evaluation/sweep/cells.py") is not None and resolve("evaluation/sweep/nothing.py") is None
