"""Charts and plot widgets the panels draw with."""
