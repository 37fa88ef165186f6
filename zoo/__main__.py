"""``python -m zoo``: the same CLI as the ``zoo`` script, for environments without the script on PATH."""

import sys

from zoo.cli import main

sys.exit(main())
