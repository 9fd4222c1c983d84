"""instacli: tell what a social-media post shows and how many likes it will get."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("instacli")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
