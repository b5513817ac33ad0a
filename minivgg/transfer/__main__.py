"""``python -m minivgg.transfer``: see ``minivgg/transfer/cli.py`` or ``--help``."""
import sys

from minivgg.transfer.cli import main

sys.exit(main())
