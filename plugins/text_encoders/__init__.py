"""Built-in caption encoders."""

from instacli_plugins.text_encoders import hf_text  # noqa: F401
