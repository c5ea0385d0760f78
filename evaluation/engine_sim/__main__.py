import sys

from evaluation.engine_sim.cli import main

sys.exit(main())
