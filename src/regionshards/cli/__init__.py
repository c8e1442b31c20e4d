"""Command-line interface: click commands, each a thin shell over one library function."""
