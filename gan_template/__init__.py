"""gan_template: GAN training with PyTorch Lightning's manual optimization, configured with Hydra.

Run ``python -m gan_template``; the loop itself is in :mod:`gan_template.module`.
"""

__version__ = "0.1.0"
