"""Allow ``python -m ocitool``."""

from ocitool.entry import ocitool

ocitool()
