"""Built-in likes regressors, one per file."""

from instacli_plugins.regressors import conv1d  # noqa: F401
from instacli_plugins.regressors import linear, mlp  # noqa: F401
from instacli_plugins.regressors import sklearn_regressors  # noqa: F401
