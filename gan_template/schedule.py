"""The step schedule: which updates one GAN iteration makes, and when regularisers run.

One *iteration* is ``n_critic`` discriminator updates followed by one generator
update. The run length (``train.iterations``), checkpoint and evaluation
intervals, LR schedulers and the EMA all count iterations. Lightning's
``trainer.global_step`` counts every optimizer step (``n_critic + 1`` per
iteration, Lightning issues #17958 and #12643), so it is never used as a unit.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StepSchedule:
    """How updates are interleaved.

    Attributes:
        n_critic: discriminator updates per generator update (WGAN uses 5).
        penalty_interval: apply the discriminator penalty on every k-th
            discriminator update only ("lazy regularisation", StyleGAN2 uses 16
            for R1). The penalty is then multiplied by k so its average strength
            is unchanged (Karras et al., 2020, appendix B).
    """

    n_critic: int = 1
    penalty_interval: int = 1

    def __post_init__(self) -> None:
        if self.n_critic < 1:
            raise ValueError(f"n_critic={self.n_critic} must be >= 1")
        if self.penalty_interval < 1:
            raise ValueError(f"penalty_interval={self.penalty_interval} must be >= 1")

    def penalty_due(self, discriminator_updates: int) -> bool:
        """Whether the discriminator update with this 0-based index carries the penalty."""
        return discriminator_updates % self.penalty_interval == 0

    @property
    def penalty_scale(self) -> float:
        """Multiplier that keeps a lazy penalty's average strength equal to the eager one."""
        return float(self.penalty_interval)
