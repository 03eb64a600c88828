"""Analyse: layer sensitivity scans (with the suffix replayer), allocation from a scan, search, latency."""
