"""The layering rules of docs/ARCHITECTURE.md, checked on the source: no import cycles, core never imports the
CLI or the GUI, the GUI uses only the session's public API and never emits its events, and modules stay small."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "explorer"
MAX_LINES = 550


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PKG.rglob("*.py")}


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """Every explorer module that ``path`` imports, at module level or inside functions."""
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rsplit(".", 1)[0] if "." in t else ""
            if t and t != name and t != "explorer":
                out.add(t)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {n: {t for t in imports_of(p, n, known) if not n.startswith(t + ".")} for n, p in mods.items()}


def test_no_import_cycles():
    g = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                cycle = stack[stack.index(m):] + [m]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(g):
        if n not in state:
            visit(n)


def test_core_imports_nothing_from_cli_or_gui():
    bad = {n: sorted(t for t in ts if t.startswith(("explorer.cli", "explorer.gui")))
           for n, ts in graph().items() if n.startswith("explorer.core")}
    assert not {n: t for n, t in bad.items() if t}


def test_gui_uses_only_the_public_session_api():
    private = re.compile(r"\b(session|s|sess|ctx\.session)\._[a-z]")
    emits = re.compile(r"\b(session|s|sess)\.(\w+\.)?(loaded|plan_changed|weights_changed|selection_changed|"
                       r"history_changed|changed)\.emit\(")
    found = []
    for p in (PKG / "gui").rglob("*.py"):
        for i, line in enumerate(p.read_text().splitlines(), 1):
            if private.search(line) or emits.search(line):
                found.append(f"{p.name}:{i}: {line.strip()}")
    assert not found, "\n".join(found)


def test_modules_stay_small():
    big = {n: len(p.read_text().splitlines()) for n, p in modules().items()}
    assert not {n: k for n, k in big.items() if k > MAX_LINES}


# Underscore members of objects we do not own that gui/ may use: "module.py:name" -> why. None needed today.
THIRD_PARTY_PRIVATE: dict[str, str] = {}


def _is_own(node: ast.expr) -> bool:
    """``self``, ``cls`` or ``super()``: the object's own members."""
    return (isinstance(node, ast.Name) and node.id in ("self", "cls")) or (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super")


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def foreign_private_access(source: str) -> list[tuple[int, str, str]]:
    """(line, member, code) of every touch of another object's private member: ``x._name`` where ``x`` is not
    self/cls/super(), ``getattr/hasattr/setattr/delattr(x, "_name")``, and setting or deleting attributes of
    another object by a computed name (``setattr(win, attr, w)``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and _private(node.attr) and not _is_own(node.value):
            found.append((node.lineno, node.attr, ast.unparse(node)))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "hasattr", "setattr", "delattr") and len(node.args) >= 2
              and not _is_own(node.args[0])):
            key = node.args[1]
            named = isinstance(key, ast.Constant) and isinstance(key.value, str)
            if (named and _private(key.value)) or (not named and node.func.id in ("setattr", "delattr")):
                found.append((node.lineno, key.value if named else "?", ast.unparse(node)))
    return found


def test_the_private_access_check_finds_what_it_should():
    bad = "win._redraw()\nwin._changed_rows = None\nsetattr(win, attr, w)\ngetattr(w, '_sized', 0)\nw.a._b\n"
    ok = "self._x()\ncls._y\nsuper()._fit()\nw.public\nx.__class__\ngetattr(self.win, attr)\nsetattr(self, a, 1)\n"
    assert sorted(m for _, m, _ in foreign_private_access(bad)) == ["?", "_b", "_changed_rows", "_redraw", "_sized"]
    assert foreign_private_access(ok) == []


def test_gui_touches_no_other_objects_private_members():
    """Issue 20: a gui module changes another object through its public methods, never its private members
    (the window gives startup/app/classroom what they need: redraw_all, set_panel, close_now, ...)."""
    found = []
    for p in sorted((PKG / "gui").rglob("*.py")):
        for line, member, code in foreign_private_access(p.read_text()):
            if f"{p.name}:{member}" not in THIRD_PARTY_PRIVATE:
                found.append(f"{p.relative_to(PKG)}:{line}: {code}")
    assert not found, "\n".join(found)
