"""``python -m bench.chaos``: one chaos run (see bench/chaos/__init__.py)."""

import sys

from bench.chaos.run import main

sys.exit(main())
