"""Ponder: the command line (`ponder serve | train | eval | bench`) and the embedded default models.

Contract: `ponder.defaults` says where the shipped checkpoints live; `ponder.cli` dispatches subcommands
to the packages that own them and holds no logic of its own.
"""

__version__ = "0.1.0"
