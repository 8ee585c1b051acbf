"""`python -m trainyard.trainers.datagen`: generate data and train on it (see the package doc)."""

import sys

from trainyard.trainers.datagen.trainer import main

if __name__ == "__main__":
    sys.exit(main())
