"""The ``lepton-nn`` subcommands that do not fit in ``cli.py`` (floor 9, like the CLI).

``args``: argument types (each bad value is one line and exit 2) and pre-flight checks;
``report``: the shared printing of metrics; ``compress``, ``tune``, ``info``, ``datasets``:
one subcommand each. ``lepton_nn/cli.py`` builds the parser and dispatches.
"""
