"""The model: layers, transforms, the text adapter, entropy models, TACO, and the conversion
from the authors' checkpoints.
"""

from tgic_jax.model.taco import TACO, ModelConfig, checkerboard_masks, init_variables

__all__ = ["TACO", "ModelConfig", "checkerboard_masks", "init_variables"]
