"""SAC's direct-to-torch path under a Trainer (vlmrm.sac.SAC._plain_optimization).

Where Lightning's backward and optimizer-step plumbing would add nothing (one device, 32-bit
or bf16-mixed precision, no hooks), the module calls ``loss.backward()`` and
``optimizer.step()`` itself. These tests train the same module twice on the same data, once
on that path and once forced onto Lightning's (a callback with a backward hook), and require
bit-identical weights, the same step count, and the hooks still called where they exist.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from tensordict import TensorDict
from torch.utils.data import DataLoader, IterableDataset

from vlmrm.keys import ACTION, DONE, NEXT, OBSERVATION, REWARD, TERMINATED
from vlmrm.sac import SAC

pytestmark = pytest.mark.usefixtures("one_thread")

OBS_DIM, ACT_DIM, K, B = 3, 2, 3, 8


class FixedBatches(IterableDataset):
    """The same seeded stream of ``[K, B]`` batches on every iteration."""

    def __iter__(self):
        g = torch.Generator().manual_seed(1)
        while True:
            terminated = torch.rand(K, B, 1, generator=g) < 0.2
            yield TensorDict(
                {
                    OBSERVATION: torch.randn(K, B, OBS_DIM, generator=g),
                    ACTION: torch.rand(K, B, ACT_DIM, generator=g) * 2 - 1,
                    NEXT: {
                        OBSERVATION: torch.randn(K, B, OBS_DIM, generator=g),
                        REWARD: torch.randn(K, B, 1, generator=g),
                        TERMINATED: terminated,
                        DONE: terminated,
                    },
                },
                [K, B],
            )


class CountBackward(L.Callback):
    """A backward hook: its presence sends the module through Lightning's plumbing."""

    def __init__(self) -> None:
        self.calls = 0

    def on_after_backward(self, trainer, pl_module) -> None:
        self.calls += 1


def _train(
    callbacks: list[L.Callback], policy_delay: int = 1, precision: str = "32-true"
) -> tuple[SAC, L.Trainer]:
    torch.manual_seed(0)
    module = SAC(OBS_DIM, ACT_DIM, hidden_sizes=(16, 16), policy_delay=policy_delay)
    trainer = L.Trainer(
        max_steps=4 * K,
        accelerator="cpu",
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    loader = DataLoader(FixedBatches(), batch_size=None, collate_fn=lambda batch: batch)
    trainer.fit(module, loader)
    return module, trainer


@pytest.mark.parametrize(
    ("policy_delay", "precision"), [(1, "32-true"), (2, "32-true"), (1, "bf16-mixed")]
)
def test_direct_path_trains_exactly_like_lightnings(policy_delay: int, precision: str) -> None:
    direct, direct_trainer = _train([], policy_delay, precision)
    counter = CountBackward()
    hooked, hooked_trainer = _train([counter], policy_delay, precision)
    assert direct._plain and not hooked._plain  # each run took the path under test
    assert direct_trainer.global_step == hooked_trainer.global_step == 4 * K
    for (name, value), other in zip(
        direct.state_dict().items(), hooked.state_dict().values(), strict=True
    ):
        assert torch.equal(value, other), name
    # One backward for the critic per update, one for actor and temperature together on
    # the updates that train the actor.
    updates = 4 * K
    assert counter.calls == updates + len(range(0, updates, policy_delay))
