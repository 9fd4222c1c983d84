"""Built-in image encoders, one per file."""

from instacli_plugins.encoders import vit_scratch  # noqa: F401
