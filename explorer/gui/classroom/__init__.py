"""Lessons, presentation mode, pruning by hand."""
