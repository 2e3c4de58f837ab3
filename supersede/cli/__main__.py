"""``python -m supersede.cli``: the same command as the ``supersede`` script."""

from supersede.cli.app import main

main()
