"""Lightning's DDP strategy, joined so that torchrun's restarts can meet again."""

from __future__ import annotations

import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy
from torch.distributed.constants import default_pg_timeout

from gan_template.harness.distributed import elastic_store
from gan_template.harness.lightning_internals import ddp_settings


class RestartableDDPStrategy(DDPStrategy):
    """``DDPStrategy`` whose process group, under torchrun, uses :func:`elastic_store`.

    Everything else is Lightning's: its ``setup_distributed`` sets the ranks
    and finds the group already made (it skips ``init_process_group`` then).
    """

    def setup_distributed(self) -> None:
        timeout, backend = ddp_settings(self)
        timeout = timeout or default_pg_timeout
        store = None if dist.is_initialized() else elastic_store(timeout)
        if store is not None:
            self.set_world_ranks()
            device_id = self.root_device if self.root_device.type != "cpu" else None
            dist.init_process_group(
                backend,
                store=store,
                rank=self.global_rank,
                world_size=self.world_size,
                timeout=timeout,
                device_id=device_id,
            )
        super().setup_distributed()
