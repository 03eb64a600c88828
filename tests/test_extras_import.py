"""Torch-Pruning is imported without timm (its FLOP counter imports timm, 2.3 s of CPU per process that opens a
model): ``extras.import_without`` hides a package from one import, and leaves it importable afterwards."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from explorer.core.extras import import_without

ROOT = Path(__file__).resolve().parent.parent


def _package(root: Path, name: str, body: str) -> None:
    (root / name).mkdir()
    (root / name / "__init__.py").write_text(textwrap.dedent(body))


def test_import_without_hides_a_package_from_that_import_only(tmp_path, monkeypatch):
    _package(tmp_path, "pe_fake_opt", "VALUE = 7\n")
    _package(tmp_path, "pe_fake_user", """
        try:
            import pe_fake_opt
            HAS = True
        except ImportError:
            HAS = False
    """)
    _package(tmp_path, "pe_fake_user2", "from pe_fake_user import HAS\nimport pe_fake_opt\nSEEN = HAS\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("pe_fake_opt", "pe_fake_user", "pe_fake_user2"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    user = import_without("pe_fake_user", "pe_fake_opt")
    assert user.HAS is False and "pe_fake_opt" not in sys.modules       # hidden from that import, not marked
    import pe_fake_opt                                                   # noqa: F401  and importable afterwards
    assert sys.modules["pe_fake_opt"].VALUE == 7
    # already imported: nothing is hidden
    monkeypatch.delitem(sys.modules, "pe_fake_user")
    assert import_without("pe_fake_user", "pe_fake_opt").HAS is True
    # the module itself already imported: returned as it is
    assert import_without("pe_fake_user", "pe_fake_opt") is sys.modules["pe_fake_user"]


CHILD = """
import json, sys
sys.path.insert(0, '.')
from explorer.core.extras import available
from explorer.core.session import Session
s = Session.open('digits-cnn')                   # the channel groups: Torch-Pruning's dependency graph
out = {"tp": 'torch_pruning' in sys.modules, "timm_after_open": 'timm' in sys.modules,
       "traced": s.groups.traced, "timm_installed": available('timm')}
if out["timm_installed"]:
    import timm
    out["timm_imports_later"] = hasattr(timm, 'create_model')
print(json.dumps(out))
"""


def test_opening_a_model_builds_its_graph_without_importing_timm():
    p = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["tp"] and out["traced"], out              # the dependency graph was built
    assert not out["timm_after_open"], out
    assert out.get("timm_imports_later", True), out
