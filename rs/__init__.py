"""rs: ResNet-RS (Bello et al., 2021) in JAX."""
