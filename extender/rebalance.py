"""`python -m extender.rebalance` runs the rebalancer service (as `cloud4iot-rebalancer`)."""

import sys

from extender.cli import rebalancer_main

if __name__ == "__main__":
    sys.exit(rebalancer_main())
