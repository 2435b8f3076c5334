"""Where the CLI talks to the user: progress, notes and summaries on stderr (tables of results go to stdout)."""

from rich.console import Console

console = Console(stderr=True)
