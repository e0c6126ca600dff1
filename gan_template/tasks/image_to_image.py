"""Image-to-image GANs: the generator maps an input image to an output, judged against a target.

An iteration::

    output = G(input)                               (with its reconstruction terms)
    if the adversarial term is on (weight > 0, iteration >= discriminator_start):
        loss_D = D-loss(D(input, target), D(input, output.detach())) [+ penalty]
        one guarded update of D
    loss_G = w_rec * rec(output, target) [+ terms] [+ w_adv * lambda * G-loss(D(input, output))]
    one guarded update of G

``lambda`` is 1, or Esser et al.'s adaptive weight (``adaptive_weight``).
Before ``discriminator_start`` the discriminator takes no step and is not run;
the iteration still counts, so the switch is a function of the iteration and
every rank (and a resumed run) makes it at the same point.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import Tensor, nn

from gan_template import models
from gan_template.losses import Reported
from gan_template.module import GANModule, frozen, reported
from gan_template.schedule import Schedule


def adaptive_weight(
    reconstruction: Tensor,
    adversarial: Tensor,
    last_layer: Tensor,
    max_weight: float = 1e4,
    eps: float = 1e-4,
) -> Tensor:
    """Esser et al. (2021), eq. 7: ``|grad_L rec| / (|grad_L adv| + eps)`` at the last layer ``L``.

    The adversarial term is scaled so that its gradient at the decoder's last
    layer is as large as the reconstruction's. A 0-d tensor, detached, clamped
    to ``[0, max_weight]``: no host read. Under DDP the two gradients are summed
    over ranks first (one collective of the last layer's size), so every rank
    uses the weight of the global batch, the one a single process would compute
    (summing, not averaging: the ratio is the same, and gloo has no average).
    """
    (rec_grad,) = torch.autograd.grad(reconstruction, last_layer, retain_graph=True)
    (adv_grad,) = torch.autograd.grad(adversarial, last_layer, retain_graph=True)
    grads = torch.stack([rec_grad.float(), adv_grad.float()])
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(grads)
    rec_norm, adv_norm = grads.flatten(1).norm(dim=1)
    return (rec_norm / (adv_norm + eps)).clamp(0.0, max_weight).detach()


class ImageToImage(GANModule):
    """A GAN whose generator translates an input image; the base of the paired and autoencoder tasks.

    Args (besides :class:`GANModule`'s):
        reconstruction: ``(output, target) -> loss`` (or ``(loss, {term: value})``);
            default: L1, as pix2pix.
        reconstruction_weight: its weight (pix2pix's lambda, 100); a number or a schedule.
        adversarial_weight: the adversarial term's weight; a number or a schedule.
            0: no adversarial term and no discriminator update (the regression baseline).
        discriminator_start: the iteration from which the discriminator trains and
            the adversarial term counts (LDM's ``disc_start``).
        adaptive_weight: scale the adversarial term by :func:`adaptive_weight` at
            the generator's ``last_layer``.
        judge_pairs: the discriminator judges ``(input, image)`` concatenated along
            channels (pix2pix's conditional D), or the image alone (an autoencoder's).
    """

    GENERATOR_INPUT = "image"
    PROGRESS: tuple[str, ...] = ("d_loss", "g_loss", "g_rec")

    def __init__(
        self,
        *args: Any,
        reconstruction: Callable[[Tensor, Tensor], Reported] | None = None,
        reconstruction_weight: float | Schedule = 1.0,
        adversarial_weight: float | Schedule = 1.0,
        discriminator_start: int = 0,
        adaptive_weight: bool = False,
        judge_pairs: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if self.schedule.n_critic != 1:
            raise ValueError(
                f"n_critic={self.schedule.n_critic}: an image-to-image update judges the output "
                "of its own batch; set train.n_critic=1"
            )
        if self.regularizers_of["generator"]:
            names = [key for key, _ in self.regularizers_of["generator"]]
            raise ValueError(
                f"regularizers: {names} regularise a generator of noise (they draw latents); "
                "an image-to-image generator has none: drop them (regularizers=[])"
            )
        if discriminator_start < 0:
            raise ValueError(f"discriminator_start={discriminator_start}: must be >= 0")
        self.reconstruction = reconstruction if reconstruction is not None else nn.L1Loss()
        # The weights' values at the current iteration (a schedule's are set every iteration).
        self.reconstruction_weight = 1.0
        self.adversarial_weight = 1.0
        self.discriminator_start = discriminator_start
        self.adaptive = adaptive_weight
        self.judge_pairs = judge_pairs
        weights = {
            "reconstruction_weight": reconstruction_weight,
            "adversarial_weight": adversarial_weight,
        }
        for name, value in weights.items():
            if isinstance(value, Schedule):
                self.hyperparameter_schedules.bind_setter(name, value, partial(setattr, self, name))
            else:
                setattr(self, name, float(value))
        self._discriminator_stepped = False
        if self.generator_ema is not None:
            # Re-estimating BatchNorm statistics feeds the network noise; an image generator
            # samples with the training generator's statistics (copied at every EMA update).
            self.generator_ema.batch_norm_samples = 0

    # ---- the algorithm ---------------------------------------------------------------------

    def training_step(self, batch: Any, batch_idx: int) -> STEP_OUTPUT:
        inputs, targets = self.unpack_pair(batch)
        diagnose = self.begin_iteration()
        outputs, terms = self.translate_for_training(inputs)
        metrics: dict[str, Tensor] = {}
        self._discriminator_stepped = self.adversarial_active
        if self._discriminator_stepped:
            metrics |= self.discriminator_step(
                self.judged(inputs, targets),
                self.judged(inputs, outputs.detach()),
                None,
                0,
                diagnose,
            )
        metrics |= self.translator_step(inputs, outputs, targets, terms, diagnose)
        return self.end_iteration(metrics)

    @property
    def adversarial_active(self) -> bool:
        """Whether this iteration trains the discriminator and adds the adversarial term."""
        return self.iteration >= self.discriminator_start and self.adversarial_weight != 0

    def translator_step(
        self,
        inputs: Tensor,
        outputs: Tensor,
        targets: Tensor,
        terms: Mapping[str, Tensor],
        diagnose: bool,
    ) -> dict[str, Tensor]:
        """The generator's update: weighted reconstruction, its terms, and the adversarial term."""
        metrics: dict[str, Tensor] = {}
        loss = self.reconstruction_weight * reported(
            metrics, "g_rec", self.reconstruction(outputs, targets)
        )
        for name, value in terms.items():  # already weighted by the task (an autoencoder's KL)
            metrics[f"g_{name}"] = value
            loss = loss + value
        with frozen(self._discriminator_parameters):  # no D weight gradients from this backward
            if self.adversarial_active:
                real_logits = None
                if self.adversarial_loss.pairs_real_and_fake:
                    with torch.no_grad():
                        real_logits = self.judge(self.judged(inputs, targets))
                fake_logits = self.judge(self.judged(inputs, outputs))
                adversarial = reported(
                    metrics,
                    "g_loss",
                    self.adversarial_loss.generator_loss(fake_logits, real_logits),
                )
                weight: Tensor | float = self.adversarial_weight
                if self.adaptive:
                    balance = adaptive_weight(loss, adversarial, self.last_layer())
                    metrics["g_adaptive_weight"] = balance
                    weight = weight * balance
                loss = loss + weight * adversarial
            norm = self.update("generator", loss, metrics, measure_norm=diagnose)
        if norm is not None:
            metrics["g_grad_norm"] = norm
        return {name: value.detach() for name, value in metrics.items()}

    def translate_for_training(self, inputs: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The output of ``inputs`` with its graph, and the task's extra loss terms (weighted)."""
        return self.generator(inputs), {}

    @torch.no_grad()
    def translate(self, inputs: Tensor, chunk_size: int = 250) -> Tensor:
        """Outputs for evaluation and the sampler: the EMA generator where there is one, eval
        mode, in chunks, float32 on the CPU."""
        network = self.sampling_generator
        weight = next(network.parameters())
        was_training = network.training
        network.eval()
        try:
            return torch.cat(
                [
                    self.evaluation_output(network, chunk.to(weight.device, weight.dtype))
                    .float()
                    .cpu()
                    for chunk in inputs.split(chunk_size)
                ]
            )
        finally:
            network.train(was_training)

    def evaluation_output(self, network: nn.Module, inputs: Tensor) -> Tensor:
        return network(inputs)

    def last_layer(self) -> Tensor:
        """The weight :func:`adaptive_weight` reads the gradients at: the generator's ``last_layer``."""
        layer = getattr(self.generator, "last_layer", None)
        if layer is None:
            raise ValueError(
                f"adaptive_weight=true needs the generator ({type(self.generator).__name__}) to "
                "name its last layer's weight as a `last_layer` property"
            )
        return layer

    # ---- helpers ---------------------------------------------------------------------------

    def judged(self, inputs: Tensor, images: Tensor) -> Tensor:
        """What the discriminator sees: ``(input, image)`` along channels, or the image alone."""
        return torch.cat([inputs, images], dim=1) if self.judge_pairs else images

    def unpack_pair(self, batch: Any) -> tuple[Tensor, Tensor]:
        """``(input, target)`` of a paired batch (labels, if any, follow and are not used)."""
        if not isinstance(batch, (list, tuple)) or len(batch) < 2:
            raise ValueError(
                f"{type(self).__name__} trains on (input, target) pairs, and the data gives "
                f"{type(batch).__name__} batches; use paired data (data=paired_digits or "
                "data=paired_folder)"
            )
        inputs, targets = batch[0], batch[1]
        return (
            inputs.contiguous(memory_format=self.memory_format),
            targets.contiguous(memory_format=self.memory_format),
        )

    def data_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = {"sample_shape": models.sample_shape(self.generator)}
        in_channels = getattr(self.generator, "in_channels", None)
        if in_channels is not None:
            shapes["input_shape"] = (in_channels, *shapes["sample_shape"][1:])
        return shapes

    def iteration_completed(self) -> None:
        if self._discriminator_stepped:
            self.discriminator_updates += 1
        if self.generator_ema is not None:
            self.generator_ema.update(self.generator, self.iteration)


class Pix2Pix(ImageToImage):
    """Paired image-to-image translation (Isola et al., 2017): U-Net G, PatchGAN D on
    ``(input, output)`` pairs, adversarial + ``reconstruction_weight`` x L1 (100 in the paper)."""
