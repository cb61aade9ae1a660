from arr_core.cli import entry

entry()
