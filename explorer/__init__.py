"""Pruning Explorer: explore neural-network pruning visually.

``explorer.core`` is the Qt-free engine (models, data, masks, metrics, jobs);
``explorer.gui`` is the PySide6 window on top of it; ``explorer.cli`` is the
``pruning-explorer`` command.
"""
from __future__ import annotations

import os
from pathlib import Path

__version__ = "0.1.0"

#: Built-in model weights, icons and the style sheet live at the repository top level.
RESOURCES = Path(os.environ.get("PRUNING_EXPLORER_RESOURCES", Path(__file__).resolve().parent.parent / "resources"))
