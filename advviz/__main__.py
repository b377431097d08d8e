"""``python -m advviz``: the same as the ``advviz`` command."""

import sys

from advviz.cli import main

sys.exit(main())
