"""refworker is the other side of the wire: it must not share code with the gateway."""

from __future__ import annotations

import ast
from pathlib import Path

import refworker

FORBIDDEN = ("dataplane", "adapters", "parsers")


def test_refworker_imports_nothing_from_the_gateway() -> None:
    offenders = []
    for path in Path(refworker.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []
