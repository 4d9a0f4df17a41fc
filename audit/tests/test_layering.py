"""audit/ sits at the bottom of the house (SPEC): every app may write to it, and it imports nothing of theirs."""

import ast
from pathlib import Path

PRODUCT_APPS = {"portal", "links", "members", "templates_sync", "delivery", "background", "sandbox"}
AUDIT = Path(__file__).resolve().parent.parent


def test_audit_imports_nothing_of_the_product():
    offenders = []
    for path in AUDIT.rglob("*.py"):
        if "tests" in path.relative_to(AUDIT).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {name}" for name in names if name.split(".")[0] in PRODUCT_APPS]
    assert offenders == []
