"""The test suite's own layout: test modules share code through tests/helpers.py and fixtures through
tests/conftest.py, never by importing one another (which runs the other module's fixtures and hides what
a module depends on)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parent
TEST_MODULES = {path.stem for path in TESTS.glob("test_*.py")}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import in the file, at any depth (inside functions too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            if node.module is None:  # from . import test_x
                found += [(node.lineno, base + alias.name) for alias in node.names]
            else:
                found.append((node.lineno, base))
    return sorted(found)


def named_test_modules(name: str) -> set[str]:
    """The test modules (and conftest) a dotted module name refers to: test_x, tests.test_x, .test_x."""
    return {part for part in name.split(".") if part in TEST_MODULES | {"conftest"}}


def test_no_test_module_imports_another_test_module():
    offences = [
        f"{path.name}:{line}: imports {name}"
        for path in sorted(TESTS.glob("*.py"))
        for line, name in imported_modules(path)
        if named_test_modules(name) - {path.stem}
    ]
    assert not offences, "share code through tests/helpers.py, fixtures through tests/conftest.py:\n" + "\n".join(offences)


def test_the_check_sees_every_form_of_import(tmp_path):
    path = tmp_path / "test_example.py"
    path.write_text("import os\nfrom test_a import x\ndef f():\n    import tests.test_b as b\nfrom . import test_c\n"
                    "from .test_d import y\nfrom helpers import z\nimport conftest\n")
    names = [name for _, name in imported_modules(path)]
    assert names == ["os", "test_a", "tests.test_b", ".test_c", ".test_d", "helpers", "conftest"]
    assert named_test_modules("tests.test_sweeps") == {"test_sweeps"} and named_test_modules("helpers") == set()
