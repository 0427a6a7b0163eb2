"""``FactoryExited``: the ``SystemExit`` a MODEL's factory raised, told apart from one its import raised.

``specs.models`` raises it where it calls the factory (a script's argparse run from the factory, say); the
session's message then says it was the factory, not the import. It is a ``SystemExit`` with the same code,
so whatever does not look for it exits as before.
"""

from __future__ import annotations

__all__ = ["FactoryExited"]


class FactoryExited(SystemExit):
    """A ``SystemExit`` raised while a MODEL's factory (class or function) was being called and checked."""
