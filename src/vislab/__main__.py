from vislab.cli import run

run()
