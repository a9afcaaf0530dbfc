"""``python -m lepton_nn`` runs the ``lepton-nn`` command."""

import sys

from .cli import main

sys.exit(main())
