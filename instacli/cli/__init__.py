"""The Typer command line. Commands only parse, call the library and print."""
