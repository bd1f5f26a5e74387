"""Modules: adversarial activations, HD-FGD and SA blocks, the SA penalty."""
