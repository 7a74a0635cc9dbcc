"""``python -m edgeplane_dev.ipmi_sim --port P [--port P2 ...] [--fault NAME ...]``."""

import sys

from edgeplane_dev.ipmi_sim.serve import main

sys.exit(main())
