"""An adversarially trained KL autoencoder: the tokenizer recipe of latent diffusion.

Esser et al. (2021, taming-transformers) and Rombach et al. (2022, LDM's
``AutoencoderKL`` with ``LPIPSWithDiscriminator``): the autoencoder's loss is

    sum over pixels of (|x - x'| + p * perceptual(x, x'))   (per image, batch mean)
    + kl_weight * KL(q(z|x) || N(0, I))                       (per image, batch mean)
    + lambda * G-loss(D(x'))           from discriminator_start on

with ``lambda`` Esser et al.'s adaptive weight (``image_to_image.adaptive_weight``)
and a patch discriminator of images alone trained with the hinge loss. Not
carried over: LDM's learnable output log-variance (a scalar that rescales the
reconstruction term; at its initial value the loss is the one above).

The perceptual term is LPIPS (Zhang et al., 2018) where its backbone's weights
are on disk (``lpips_weights``; LPIPS's own linear layers ship with
torchmetrics), else, with ``perceptual=auto``, an offline stand-in, ``1 - SSIM``
(structure, contrast and luminance over local windows): not LPIPS, but it runs
without weights and also rewards structure over per-pixel averages.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gan_template.losses import Reported
from gan_template.tasks.image_to_image import ImageToImage


def lpips_network(net: str, weights: str) -> nn.Module:
    """torchmetrics' LPIPS with the ImageNet backbone read from ``weights`` (no download).

    torchmetrics' public LPIPS classes fetch torchvision's backbone through
    torch.hub and take no path, so the network is its ``_LPIPS`` built with a
    random backbone (its linear layers are loaded from the package), then the
    backbone's weights are loaded from the file: a torchvision state dict of
    ``vgg16`` / ``alexnet`` / ``squeezenet1_1`` (``features.N.*`` keys).
    """
    from torchmetrics.functional.image.lpips import _LPIPS

    path = Path(weights).expanduser()
    if not path.is_file():
        raise ValueError(
            f"lpips_weights={weights!r} is not a file; give torchvision's {net} weights file "
            "(e.g. vgg16-397923af.pth from a machine with internet), or set perceptual=ssim "
            "(offline) or perceptual=none"
        )
    import torchvision

    network = _LPIPS(pretrained=True, net=net, pnet_rand=True)  # type: ignore[arg-type]
    backbone = {"vgg": "vgg16", "alex": "alexnet", "squeeze": "squeezenet1_1"}[net]
    reference = getattr(torchvision.models, backbone)(weights=None)
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        reference.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(
            f"lpips_weights={weights!r}: not torchvision's {backbone} weights ({str(error)[:200]}"
            "...); lpips_net names the backbone"
        ) from None
    # LPIPS's slices hold the backbone's feature layers in their order, so the two state
    # dicts list the same tensors in the same order.
    own = network.net.state_dict()
    features = list(reference.features.state_dict().values())[: len(own)]
    mapped = dict(zip(own, features, strict=True))
    network.net.load_state_dict(mapped)
    network.eval().requires_grad_(False)
    return network


class AutoencoderReconstruction(nn.Module):
    """Per image, ``sum |x - x'| + perceptual_weight * perceptual * pixels``; batch mean.

    Returns ``(value, {"l1": ..., "perceptual": ...})`` (per-pixel means, for the logs).

    Args:
        perceptual: ``lpips`` (needs ``lpips_weights``), ``ssim`` (offline),
            ``auto`` (LPIPS when ``lpips_weights`` is a file, else SSIM with a
            warning) or ``none``.
        perceptual_weight: LDM's ``perceptual_weight`` (1.0).
        lpips_net: the LPIPS backbone: ``vgg`` (LDM's), ``alex`` or ``squeeze``.
        lpips_weights: torchvision's weights file of that backbone.
    """

    def __init__(
        self,
        perceptual: str = "auto",
        perceptual_weight: float = 1.0,
        lpips_net: str = "vgg",
        lpips_weights: str | None = None,
    ) -> None:
        super().__init__()
        if perceptual not in ("auto", "lpips", "ssim", "none"):
            raise ValueError(f"perceptual={perceptual!r}: 'auto', 'lpips', 'ssim' or 'none'")
        if lpips_net not in ("vgg", "alex", "squeeze"):
            raise ValueError(f"lpips_net={lpips_net!r}: 'vgg', 'alex' or 'squeeze'")
        if perceptual == "auto":
            available = lpips_weights is not None and Path(lpips_weights).expanduser().is_file()
            if not available:
                warnings.warn(
                    "perceptual=auto: no LPIPS backbone weights on disk (lpips_weights="
                    f"{lpips_weights!r}), so the perceptual term is 1 - SSIM, an offline "
                    "stand-in; set lpips_weights to torchvision's vgg16 file for LPIPS",
                    stacklevel=2,
                )
            perceptual = "lpips" if available else "ssim"
        if perceptual == "lpips":
            if lpips_weights is None:
                raise ValueError(
                    "perceptual=lpips needs lpips_weights (torchvision's backbone weights file; "
                    "nothing is downloaded at run time); or set perceptual=ssim"
                )
            self.lpips: nn.Module | None = lpips_network(lpips_net, lpips_weights)
        else:
            self.lpips = None
        self.perceptual = perceptual
        self.perceptual_weight = perceptual_weight

    def perceptual_distance(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """One distance per image (0 for identical images)."""
        if self.lpips is not None:
            three = [t.expand(-1, 3, -1, -1) if t.shape[1] == 1 else t for t in (outputs, targets)]
            # LPIPS's backbones need about 32 px at least (their poolings).
            if three[0].shape[-1] < 32:
                three = [nn.functional.interpolate(t, size=32, mode="bilinear") for t in three]
            return self.lpips(three[0].float(), three[1].float()).flatten()
        from torchmetrics.functional.image import structural_similarity_index_measure

        kernel = 11 if min(outputs.shape[-2:]) >= 32 else 7
        ssim = structural_similarity_index_measure(
            (outputs.float() + 1) / 2,
            (targets.float() + 1) / 2,
            data_range=1.0,
            kernel_size=kernel,
            reduction="none",
        )
        assert isinstance(ssim, Tensor)  # one value per image (reduction="none")
        return 1.0 - ssim

    def forward(self, outputs: Tensor, targets: Tensor) -> Reported:
        l1 = (outputs - targets).abs()
        pixels = l1[0].numel()
        per_image = l1.flatten(1).sum(1)
        terms = {"l1": l1.mean()}
        if self.perceptual != "none" and self.perceptual_weight:
            distance = self.perceptual_distance(outputs, targets)
            per_image = per_image + self.perceptual_weight * pixels * distance
            terms["perceptual"] = distance.mean()
        return per_image.mean(), terms


class AdversarialAutoencoder(ImageToImage):
    """The KL autoencoder (the network ``generator``: ``encode``/``decode``, ``last_layer``)
    trained against a patch discriminator of images.

    Args (besides :class:`ImageToImage`'s):
        kl_weight: weight of the KL term (LDM's 1e-6 with per-image sums).
        sample_posterior: train on a sample of the posterior (LDM) or its mean.
    """

    def __init__(
        self, *args: Any, kl_weight: float = 1e-6, sample_posterior: bool = True, **kwargs: Any
    ) -> None:
        kwargs.setdefault("judge_pairs", False)
        super().__init__(*args, **kwargs)
        for method in ("encode", "decode"):
            if not callable(getattr(self.generator, method, None)):
                raise ValueError(
                    f"model.generator ({type(self.generator).__name__}) has no {method}(): the "
                    "autoencoder task needs an autoencoder network (gan_template.models."
                    "autoencoder.KLAutoencoder)"
                )
        if kl_weight < 0:
            raise ValueError(f"kl_weight={kl_weight}: must be >= 0")
        self.kl_weight = kl_weight
        self.sample_posterior = sample_posterior

    def translate_for_training(self, inputs: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        autoencoder: Any = self.generator  # checked in __init__: encode and decode
        mean, logvar = autoencoder.encode(inputs)
        latents = mean
        if self.sample_posterior:
            latents = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        # KL(N(mean, var) || N(0, 1)), summed over the latent, averaged over the batch (LDM).
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1).mean()
        return autoencoder.decode(latents), {"kl": self.kl_weight * kl}
