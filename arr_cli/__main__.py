from arr_cli import entry

entry()
