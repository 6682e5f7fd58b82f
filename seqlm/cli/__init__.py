"""The `seqlm` command line: thin typer commands over library functions."""
