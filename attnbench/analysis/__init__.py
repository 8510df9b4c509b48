"""Read finished runs only: attention maps and head statistics (maps), reports, plots."""
