"""Deploy: channel compaction, exports (checkpoint, sparse archive, modules), report.json, results bundles."""
