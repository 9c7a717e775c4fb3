"""BC: behaviour cloning, the reference every offline-RL agent should beat.

A deterministic policy ``pi(s) = tanh(MLP(s))`` regressed onto the dataset's actions,
``L = E_(s,a)~D ||pi(s) - a||^2 / act_dim`` (``F.mse_loss``): the BC baseline of TD3+BC (Fujimoto & Gu, 2021) and CORL's
``any_percent_bc.py`` (2x256 ReLU, Adam 3e-4, batch 256, 1M steps), without state normalisation
so that it sees the data exactly as the other agents do.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from agents.base import Agent, AgentConfig, Batch, SeedStreams
from agents.nets import adam, SeedMLP, torch_default


@dataclasses.dataclass
class BCConfig(AgentConfig):
    lr: float
    hidden_dims: tuple[int, ...]


class BC(Agent):
    name = "bc"
    Config = BCConfig
    config: BCConfig

    def __init__(self, obs_dim: int, act_dim: int, config: BCConfig, seeds, device):
        super().__init__(obs_dim, act_dim, config, seeds, device)
        init = SeedStreams(self.seeds, "bc/init", "cpu")
        sizes = (obs_dim, *config.hidden_dims, act_dim)
        self.policy = SeedMLP(self.n_seeds, sizes).init_(init, torch_default, bias="torch_default").to(self.device)
        self.opt = adam(self.policy.parameters(), lr=config.lr)

    def learn(self, batch: Batch) -> dict[str, Tensor]:
        predicted = torch.tanh(self.policy(batch.observations))
        loss = (predicted - batch.actions).square().mean(dim=(-2, -1))  # F.mse_loss per seed
        self.opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        self.opt.step()
        return {"bc_loss": loss.detach()}

    @torch.no_grad()
    def act(self, observations: Tensor) -> Tensor:
        return torch.tanh(self.policy(observations))
