"""Command-line entry points: `python -m vlm.scripts.<name> --help`."""
