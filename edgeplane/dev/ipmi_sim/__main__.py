"""``python -m edgeplane.dev.ipmi_sim --port P [--port P2 ...] [--fault NAME ...]``."""

import sys

from edgeplane.dev.ipmi_sim.serve import main

sys.exit(main())
