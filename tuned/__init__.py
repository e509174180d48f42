"""tuned: a trial scheduler daemon for one GPU workstation."""

__version__ = "0.1.0"
