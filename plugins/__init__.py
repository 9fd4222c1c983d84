"""Built-in instacli plugins: image encoders, likes regressors and text encoders.

Importing this package registers every built-in; third-party packages register theirs through
entry points (see ``instacli.registry``).
"""

from instacli_plugins import encoders, regressors, text_encoders  # noqa: F401  (imported for registration)
