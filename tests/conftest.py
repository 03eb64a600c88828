"""Test setup: headless Qt, isolated settings, small shared fixtures."""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("PYTHONHASHSEED", "0")
# One OpenMP thread in every process the tests start (the CLI, the benchmarks' quick modes, the soak, the window
# in its own process), as in the test processes themselves (below): with both workers busy, a child on torch's
# default of one thread per core oversubscribed the 2 cores -- a tiny-lm forward took 1.6 s on 2 threads against
# 36 ms on one on the busy machine. The torchrun tests set it too.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# the channel-coupling analysis gives up after 15 s (then channels are pruned per layer): with the suite on both
# cores and a busy machine digits-cnn's analysis can take that long, and the tests that need its groups would fail
os.environ.setdefault("PRUNING_EXPLORER_GROUPS_BUDGET_S", "120")

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# One intra-op thread: tests measure behaviour, not speed, and oversubscribed threads (another process on
# the 2 cores) slow small-tensor training down by 10x or more.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path_factory, monkeypatch):
    """QSettings and any config go to a temp HOME: tests never touch the user's recent files."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("HOME", str(home))
    yield


@pytest.fixture
def cnn():
    """A fresh digits-cnn session (about 10 ms to open): tests may change it freely."""
    from explorer.core.session import Session
    return Session.open("digits-cnn")


@pytest.fixture
def mlp():
    """A fresh digits-mlp session."""
    from explorer.core.session import Session
    return Session.open("digits-mlp")


SHORT_TINY_TEXT_BYTES = 48_000     # 374 blocks of 128 tokens: 300 train (calibration takes 128), 37 val, 37 test


@pytest.fixture(scope="session")
def short_tiny_text_file(tmp_path_factory) -> Path:
    """The first 48 kB of tiny-text's file (cut at a character boundary), written once per process."""
    from explorer.core.model.text_data import tiny_text_path

    path = tmp_path_factory.mktemp("tiny-text") / "python-docs-excerpt.txt"
    path.write_bytes(tiny_text_path().read_bytes()[:SHORT_TINY_TEXT_BYTES].decode("utf-8", "ignore").encode())
    return path


@pytest.fixture
def short_tiny_text(short_tiny_text_file, monkeypatch):
    """``tiny-text`` reads the excerpt above for this test: tiny-lm's evaluations read 37 test blocks instead of
    364 (each was about 5 s of one core), its calibration still 128 training blocks. For tests whose assertions
    hold on any text -- numbers shown equal the session's, a pruned model is worse than the dense one, a report's
    keys -- not for those about tiny-text itself or tiny-lm's trained quality (test_tiny_lm.py keeps the whole
    text there). Nothing caches a loaded dataset, so the next test reads the whole text again."""
    from explorer.core.model import text_data

    monkeypatch.setattr(text_data, "tiny_text_path", lambda: short_tiny_text_file)
    return short_tiny_text_file


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """Free the test's windows for real. pytest-qt closes the widgets a test registered and calls deleteLater(),
    but outside a running event loop Qt never carries the deletion out: every MainWindow (about 1,800 widgets)
    stayed alive until the process ended, and each later ``setStyleSheet`` (make_app) re-polished all of them,
    so a window's setup grew to 10-15 s late in a worker. Runs after pytest-qt's own teardown."""
    result = yield
    if "PySide6.QtWidgets" in sys.modules:
        from PySide6.QtCore import QCoreApplication, QEvent

        if QCoreApplication.instance() is not None:
            QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    return result


# The longest tests (each tens of seconds: own processes, torchrun launches, many windows), started first: xdist
# hands tests out in collection order, and one of these drawn last would leave the other worker idle at the end.
SLOW_FIRST = ("test_soak.py::test_short_soak", "test_benchmarks_quick.py", "test_gui_real_screen.py",
              "test_distributed.py", "test_scan_torchrun.py", "test_hf_models.py::test_prune_cli",
              "test_model_sources.py::test_prune_exports", "test_issue25_findings.py::test_the_screenshot_error",
              "test_gui_classroom.py")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        nodeid = item.nodeid.removeprefix("tests/")
        return next((i for i, key in enumerate(SLOW_FIRST) if nodeid.startswith(key)), len(SLOW_FIRST))
    items.sort(key=rank)     # stable: the files' own order is kept, and every worker collects the same order
