import sys

from edgeplane_dev.redfish_sim.server import main

sys.exit(main())
