"""`python -m rebalancer` runs the rebalancer service (as `cloud4iot-rebalancer`)."""

import sys

from rebalancer.cli import main

if __name__ == "__main__":
    sys.exit(main())
