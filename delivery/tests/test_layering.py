"""delivery/ knows nothing of links or members (SPEC): a message carries an opaque subject key. It may use
audit and background, like every app, and nothing in it imports the sandbox."""

import ast
from pathlib import Path

HIGHER_APPS = {"portal", "links", "members", "templates_sync", "sandbox"}
DELIVERY = Path(__file__).resolve().parent.parent


def test_delivery_imports_nothing_of_the_apps_above_it():
    offenders = []
    for path in DELIVERY.rglob("*.py"):
        if "tests" in path.relative_to(DELIVERY).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {name}" for name in names if name.split(".")[0] in HIGHER_APPS]
    assert offenders == []
