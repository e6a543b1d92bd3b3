from pyaudit.cli import run

run()
