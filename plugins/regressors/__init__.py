"""Built-in likes regressors, one per file."""

from instacli_plugins.regressors import conv1d  # noqa: F401
