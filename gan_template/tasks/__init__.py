"""Tasks beyond noise-to-image, each a GANModule subclass of the user's wing plus its YAML.

- ``image_to_image.Pix2Pix``: paired translation (Isola et al., 2017), ``task=paired``;
- ``autoencoder.AdversarialAutoencoder``: the KL autoencoder of latent diffusion
  with a patch discriminator (Esser et al., 2021; Rombach et al., 2022), ``task=autoencoder``.

Both are ``image_to_image.ImageToImage``: the generator maps an input image to
an output judged against a target, and every harness guarantee (the guarded
update, skips agreed under DDP, exact resume, EMA) comes from ``GANModule``.
"""
