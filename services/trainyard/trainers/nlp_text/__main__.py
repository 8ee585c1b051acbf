"""`python -m trainyard.trainers.nlp_text`: train a text classifier (see the package doc)."""

import sys

from trainyard.trainers.nlp_text.trainer import main

if __name__ == "__main__":
    sys.exit(main())
