"""The window's OWL / alpha allocation and the layer table's Outliers and Alpha columns (issue 23 item 3)."""
from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from explorer.core.session import Session  # noqa: E402
from explorer.gui.panels.layer_table import COL_TIPS, STAT_COLUMNS  # noqa: E402
from tests.gui_helpers import open_window, wait_jobs  # noqa: E402


def test_owl_and_alpha_in_the_allocation_box_and_the_layer_table(qtbot, tmp_path):
    with open_window(qtbot, tmp_path, Session.open("digits-mlp", "digits")) as win:
        wait_jobs(qtbot, win)
        s, t = win.session, win.table
        p = win.sensitivity_panel
        assert all(t.isColumnHidden(c) for c in STAT_COLUMNS.values())       # nothing computed yet
        assert all(COL_TIPS[c] for c in STAT_COLUMNS)
        assert t.horizontalHeaderItem(STAT_COLUMNS["Alpha"]).toolTip() == COL_TIPS["Alpha"]
        p.alloc.diagnose()
        wait_jobs(qtbot, win)
        assert not any(t.isColumnHidden(c) for c in STAT_COLUMNS.values())
        for r in range(t.rowCount()):
            assert t.item(r, STAT_COLUMNS["Outliers"]).text().endswith("%")
            assert t.item(r, STAT_COLUMNS["Alpha"]).text()
        for key in ("owl", "alpha"):
            p.alloc.mode.setCurrentIndex(p.alloc.mode.findData(key))
            assert p.alloc.value.value() == pytest.approx(70.0)
            p.alloc.allocate()              # no scan needed
            wait_jobs(qtbot, win)
            assert s.totals().sparsity == pytest.approx(0.7, abs=1e-3)
            assert len({lp.sparsity for lp in s.plan.active().values()}) > 1 or key == "owl"
            assert key.upper() in p.alloc.alloc_info.text().upper()
        s.undo()                            # undoable like every plan edit
        assert s.totals().sparsity == pytest.approx(0.7, abs=1e-3)   # back to the OWL plan
        s.undo()
        assert not s.plan.active()


def test_blocks_dialog_lists_each_blocks_influence(qtbot, tmp_path):
    from tests import tiny_models as tiny

    folder, text = tiny.llama_folder(tmp_path / "llama"), tiny.write_text(tmp_path / "t.txt")
    with open_window(qtbot, tmp_path, Session.open(f"hf:{folder}", f"text:{text}")) as win:
        wait_jobs(qtbot, win)
        box = win.sensitivity_panel.alloc
        box.show_blocks()
        wait_jobs(qtbot, win)
        t = box.blocks_dialog.table
        assert t.rowCount() == 2 and t.item(0, 0).text() == "model.layers.0"
        assert float(t.item(0, 1).text()) >= 0 and t.item(0, 2).text() not in ("", "—")
        assert sorted(t.item(r, 3).text() for r in range(2)) == ["1", "2"]
        box.blocks_dialog.close()
    with open_window(qtbot, tmp_path, Session.open("digits-cnn")) as win:
        wait_jobs(qtbot, win)
        win.sensitivity_panel.alloc.show_blocks()
        wait_jobs(qtbot, win)
        assert "no stack of repeated blocks" in win.last_error[1]
