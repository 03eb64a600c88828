"""Qt side of Pruning Explorer (PySide6 + pyqtgraph). Reads the core session; never re-implements core logic."""
