"""`python -m edgetrust` runs the CLI."""

from edgetrust.cli import main

main()
