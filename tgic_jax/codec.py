"""`tgic_jax.codec` is `tgic_jax.coding.codec` (kept for users and scripts)."""

import sys

from tgic_jax.coding import codec as _module

sys.modules[__name__] = _module
