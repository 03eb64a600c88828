"""Menu and toolbar actions: measuring, exporting, opening, cluster jobs."""
