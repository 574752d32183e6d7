"""The console programs' entry points: ``ocitool`` and ``ocitool-runtime``.

Each runs one command and leaves with ``os._exit``, so the cyclic garbage collector can
only cost time (~2 ms of collections while the command line's modules load). It is
switched off here, before those imports, rather than in the modules themselves, which
library code and tests may import.
"""

import gc


def ocitool() -> None:
    """``ocitool``: pull, unpack and run images."""
    gc.disable()
    from ocitool.cli import main
    main()


def ocitool_runtime() -> None:
    """``ocitool-runtime``: the OCI runtime with runc's commands."""
    gc.disable()
    from ocitool.cli_runtime import main
    main()
