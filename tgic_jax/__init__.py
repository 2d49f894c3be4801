"""TACO, the text-guided learned image codec (Lee et al., ICML 2024), in JAX and Flax."""
