"""jaxlab: JAX research codebase for optimizer and sparsity scaling-law studies."""
