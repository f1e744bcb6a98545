"""`python -m viz.cli` runs the `viz` command."""

from viz.cli import main

main()
