"""Paper-style tables and comparison plots from finished runs (hspace-table)."""
