"""`tgic_jax.convert` is `tgic_jax.model.convert` (kept for users and scripts)."""

import sys

from tgic_jax.model import convert as _module

sys.modules[__name__] = _module
