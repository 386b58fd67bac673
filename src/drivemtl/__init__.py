"""DriveMTL: one network for every 2D perception task of a self-driving car."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("drivemtl")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
