"""Allow ``python -m ocitool``."""

from ocitool.cli import main

main()
