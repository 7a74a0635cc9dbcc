import sys

from edgeplane.dev.redfish_sim.server import main

sys.exit(main())
