"""Programs that show the package at work (`make demo`); run from the repository root."""
