"""The layering rules of docs/ARCHITECTURE.md, checked on the source: no import cycles, core never imports the
CLI or the GUI, core's stages depend downwards only, the GUI uses only the session's public API and never emits its
events, and modules stay small."""
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


# The stage order inside explorer.core (docs/ARCHITECTURE.md, "Stage order"): a module may import modules of its
# own level or lower, never higher -- imports inside functions included. Keys are the first name under
# explorer.core (a top-level module or a package); every core module must have a level, so a new package is
# placed here (and in the doc) when it is added. Modules named session* (the session's parts) are level 8.
STAGES = {
    # 0 base: shared plumbing and the file formats of the archives
    "errors": 0, "jobs": 0, "fileio": 0, "finite": 0, "device": 0, "extras": 0, "checks": 0, "safe_read": 0,
    "formats": 0,
    "model": 1, "prune": 2, "train": 3, "analyse": 4, "compress": 5, "deploy": 6, "flows": 7,
    # 8: the session and what sits on it
    "measure_plan": 8, "undo": 8, "history": 8, "measurements": 8, "lessons": 8, "finetune_job": 8, "arch_check": 8,
}
SESSION_LEVEL = 8

# Modules the lead is rewriting into core/flows (issue 20): their upward imports are tolerated until then.
# Empty this set as each one moves; do not add to it.
LEAD_MOVING: set[str] = set()   # modules allowed to import upwards while they move (none now)


def stage_of(module: str) -> int | None:
    parts = module.split(".")
    if parts[:2] != ["explorer", "core"]:
        return None
    if len(parts) == 2:
        return 0     # explorer/core/__init__.py
    if parts[2].startswith("session"):
        return SESSION_LEVEL
    return STAGES.get(parts[2])


def test_stages_depend_downwards():
    g = graph()
    core = sorted(n for n in g if n.startswith("explorer.core"))
    unplaced = [n for n in core if stage_of(n) is None]
    assert not unplaced, f"core modules with no stage level (add them to STAGES and docs/ARCHITECTURE.md): {unplaced}"
    upward = [f"{n} (level {stage_of(n)}) imports {t} (level {stage_of(t)})"
              for n in core if n not in LEAD_MOVING
              for t in sorted(g[n]) if t.startswith("explorer.core") and stage_of(t) > stage_of(n)]
    assert not upward, "stages must depend downwards only:\n" + "\n".join(upward)


# ---------------------------------------------------------------------------- the session's parts and the flows

SESSION_PKG = PKG / "core" / "session"
PART_MAX_LINES = 320        # a part of the session; the facade holding them is under MAX_LINES


def test_session_is_parts_without_mixins():
    tree = ast.parse((SESSION_PKG / "session.py").read_text())
    session = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Session")
    assert not session.bases, "the session holds its parts as attributes; no mixins"
    for p in SESSION_PKG.glob("*.py"):
        if p.name not in ("session.py", "__init__.py"):
            n = len(p.read_text().splitlines())
            assert n <= PART_MAX_LINES, f"{p.name}: {n} lines (a part of the session stays small)"


SESSION_MAX_PUBLIC = 83     # issue 20: 106 before the panels talked to the parts; a new delegation replaces one


def session_public_names() -> set[str]:
    """The facade's public names: class-level methods, properties and signals, and the attributes ``__init__``
    sets on ``self`` (the parts, the lock, the seed ...), without a leading underscore."""
    tree = ast.parse((SESSION_PKG / "session.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Session")
    names = set()
    for n in cls.body:
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(n.name)
        elif isinstance(n, ast.Assign):
            names.update(t.id for t in n.targets if isinstance(t, ast.Name))
        elif isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name):
            names.add(n.target.id)
    init = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    for n in ast.walk(init):
        if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store) and isinstance(n.value, ast.Name) \
                and n.value.id == "self":
            names.add(n.attr)
    return {n for n in names if not n.startswith("_")}


def test_session_facade_stays_small():
    names = session_public_names()
    assert len(names) <= SESSION_MAX_PUBLIC, sorted(names)
    # delegations the GUI used: callers ask the part now
    assert not names & {"set_manual", "toggle_manual", "can_undo", "mark_saved", "adopt_finetune", "record_scan",
                        "restore", "uncached"}


def test_gui_subscribes_to_the_parts_not_the_broad_session_events():
    broad = re.compile(r"\b(session|s)\.(plan_changed|weights_changed|history_changed)\.connect\(")
    found = [f"{p.name}:{i}: {line.strip()}" for p in (PKG / "gui").rglob("*.py")
             for i, line in enumerate(p.read_text().splitlines(), 1) if broad.search(line)]
    assert not found, "\n".join(found)


def test_session_parts_and_flows_touch_no_private_members_of_others():
    bad = [f"{p.relative_to(ROOT)}:{line}: {code}" for folder in (SESSION_PKG, PKG / "core" / "flows")
           for p in sorted(folder.glob("*.py")) for line, _, code in foreign_private_access(p.read_text())]
    assert not bad, "private members of other objects:\n" + "\n".join(bad)


def test_flows_never_import_the_session():
    g = graph()
    bad = {n: sorted(t for t in ts if t.startswith("explorer.core.session"))
           for n, ts in g.items() if n.startswith("explorer.core.flows")}
    assert not {n: t for n, t in bad.items() if t}


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


def test_session_and_snapshot_answer_every_question_of_the_state_view():
    """Functions annotated ``StateView`` take a Session or a Snapshot: both must answer all of it."""
    from explorer.core.prune.state_view import StateView
    from explorer.core.session import Session

    members = [n for n in vars(StateView) if not n.startswith("_")]
    assert len(members) > 20
    s = Session.open("digits-mlp")
    snap = s.snapshot()
    missing = {type(o).__name__: [n for n in members if not hasattr(o, n)] for o in (s, snap)}
    assert missing == {"Session": [], "Snapshot": []}
