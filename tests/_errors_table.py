"""Regenerate the "every error the library raises" table of docs/errors.md.

Usage: ``python tests/_errors_table.py > /tmp/table.md`` and paste it below the curated
bad-input table. It lists each ``raise``/``warnings.warn`` in sktx/ with the function
it is in and the message template (f-string fields shown as ``{...}``).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "sktx"


def _message(node: ast.AST | None) -> str:
    if node is None:
        return ""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            v.value if isinstance(v, ast.Constant) else "{" + ast.unparse(v.value) + "}"
            for v in node.values
        )
    if isinstance(node, ast.BinOp):
        return _message(node.left) + _message(node.right)
    return ast.unparse(node)


def rows():
    for path in sorted(ROOT.rglob("*.py")):
        tree = ast.parse(path.read_text())
        funcs = {}
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for sub in ast.walk(fn):
                    funcs.setdefault(id(sub), fn.name)
        for node in ast.walk(tree):
            call, kind = None, None
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                call, kind = node.exc, ast.unparse(node.exc.func)
            elif isinstance(node, ast.Call) and ast.unparse(node.func) in ("warnings.warn", "warn"):
                call = node
                cat = call.args[1] if len(call.args) > 1 else None
                kind = "warning: " + (ast.unparse(cat) if cat is not None else "UserWarning")
            if call is None:
                continue
            if kind.startswith("typer.Exit"):
                continue  # exit codes, not messages
            msg = _message(call.args[0] if call.args else None)
            msg = " ".join(msg.split()).replace("|", "\\|")
            where = f"{path.relative_to(ROOT.parent)}:{node.lineno}"
            yield where, funcs.get(id(node), "<module>"), kind, msg


def main() -> None:
    print("| Where | Raised in | Type | Message (template) |")
    print("|---|---|---|---|")

    def key(row):
        path, line = row[0].rsplit(":", 1)
        return path, int(line)

    for where, fn, kind, msg in sorted(rows(), key=key):
        print(f"| `{where}` | `{fn}` | {kind} | {msg or '(re-raised)'} |")


if __name__ == "__main__":
    main()
