"""Client library for the tuned daemon: a Ray-Tune-shaped API and the in-trial runtime.

Import the API the way Ray Tune users do::

    from tuned_client import tune
"""

__version__ = "0.1.0"
