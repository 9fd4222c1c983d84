"""instacli: tell what a social-media post shows and how many likes it will get."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("instacli")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"


def __getattr__(name: str) -> object:
    """``instacli.load`` (:func:`instacli.api.load`), imported on first use: ``import instacli`` stays
    light for the CLI, which must not pay for torch before it has parsed its arguments."""
    if name == "load":
        from instacli.api import load

        return load
    raise AttributeError(f"module 'instacli' has no attribute {name!r}")
