"""`tgic_jax.losses` is `tgic_jax.train.losses` (kept for users and scripts)."""

import sys

from tgic_jax.train import losses as _module

sys.modules[__name__] = _module
