"""Built-in image encoders, one per file."""

from instacli_plugins.encoders import vit_scratch  # noqa: F401
from instacli_plugins.encoders import efficientnet_lite0  # noqa: F401
from instacli_plugins.encoders import hf_vit  # noqa: F401
from instacli_plugins.encoders import inception_v3  # noqa: F401
from instacli_plugins.encoders import timm_backbone  # noqa: F401
from instacli_plugins.encoders import hf_backbone  # noqa: F401
