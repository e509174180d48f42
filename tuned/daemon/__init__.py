"""The daemon: its parts composed (``base``) and its request verbs, one module each.

Nothing below this package (``core``, ``store``, ``run``, ``serve``) imports
it: each part receives what it needs, a narrow interface (a ``Protocol``
defined beside the part) that ``Daemon`` satisfies.
"""

from __future__ import annotations

from .compaction import Compaction
from .drivers import Drivers
from .intake import Intake
from .outcomes import Outcomes
from .reports import Reports
from .resume import Resume


class Daemon(Intake, Drivers, Outcomes, Reports, Resume, Compaction):
    """Every verb of the daemon on one object (see each mixin's module)."""


__all__ = ["Daemon"]
