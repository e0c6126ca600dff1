"""Generator and discriminator families. Plain torch: no Lightning, no Hydra.

Every generator has ``latent_dim`` and ``sample_shape`` attributes and is called
as ``generator(z)``; every discriminator maps a batch of samples to one logit
per sample, shape ``(batch,)``.
"""
