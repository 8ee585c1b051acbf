"""`python -m trainyard.trainers.nlp_token`: train a token-tagging CRF (see the package doc)."""

import asyncio
import os
import sys
from pathlib import Path

from trainyard.trainers.nlp_token.trainer import LIBRARIES, run
from trainyard.workload import Preload

if __name__ == "__main__":
    preload = Preload(LIBRARIES)  # imported while the config, report and inputs travel
    sys.exit(asyncio.run(run(os.environ, Path.cwd())))
