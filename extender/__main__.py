"""`python -m extender` runs the extender service."""

import sys

from extender.cli import extender_main

sys.exit(extender_main())
