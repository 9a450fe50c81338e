"""`python -m chatkeep` runs the command line."""

from chatkeep.cli import main

main()
