"""IQL: Implicit Q-Learning (Kostrikov, Nair & Levine, ICLR 2022).

Follows the official JAX code, ikostrikov/implicit_q_learning (``learner.py``, ``critic.py``,
``actor.py``, ``policy.py``, ``train_offline.py``). Each step, in the official order:

1. value, expectile regression on the target critic:
   ``L_V = E[ |tau - 1(u < 0)| u^2 ],  u = min(Q1', Q2')(s, a) - V(s)``
2. actor, advantage-weighted regression with the *updated* value:
   ``L_pi = -E[ min(exp(beta (min Q'(s, a) - V(s))), 100) log pi(a | s) ]``
3. critic, TD to the updated value: ``L_Q = E[ sum_i (r + gamma (1 - d) V(s') - Q_i(s, a))^2 ]``
4. target critic, Polyak: ``Q' <- (1 - 0.005) Q' + 0.005 Q``.

Networks are 2x256 ReLU MLPs with orthogonal(sqrt 2) kernels and zero biases (``common.py``
``default_init``). The policy is a diagonal Gaussian whose mean is squashed by tanh and whose
log-std is a state-independent parameter clipped to [-5, 2]; evaluation uses the mean. The actor's
learning rate follows a cosine decay to 0 over the run (``optax.cosine_decay_schedule`` over
``max_steps``); value and critic use Adam at 3e-4.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Literal

import torch
from torch import Tensor, nn

from agents.base import Agent, AgentConfig, Batch, SeedStreams, Transitions
from agents.nets import adam, SeedLinear, SeedMLP, TwinQ, cosine_annealing, init_seed_linear_, orthogonal, polyak_


@dataclasses.dataclass
class IQLConfig(AgentConfig):
    actor_lr: float  # learner.py actor_lr
    value_lr: float
    critic_lr: float
    hidden_dims: tuple[int, ...]  # (256, 256)
    discount: float  # 0.99
    tau: float  # target critic Polyak rate, 0.005
    expectile: float  # tau of the expectile loss: 0.7 MuJoCo, 0.9 AntMaze
    temperature: float  # beta, inverse temperature of the AWR weights: 3.0 MuJoCo, 10.0 AntMaze
    max_weight: float  # clip of exp(beta * advantage), 100 (actor.py)
    actor_dropout: float  # 0.1 on Kitchen/Adroit, else 0
    actor_lr_schedule: Literal["cosine", "constant"]  # "cosine" (decay to 0 over `steps`) or "constant"
    log_std_min: float  # -5 (learner.py)
    log_std_max: float  # 2 (policy.py LOG_STD_MAX)
    action_clip_eps: float  # dataset actions clipped to +-(1 - eps), 1e-5 (dataset_utils.py)


def expectile_loss(diff: Tensor, expectile: float) -> Tensor:
    """``|tau - 1(u < 0)| u^2`` elementwise (critic.py ``loss``: weight tau where u > 0)."""
    weight = torch.where(diff > 0, expectile, 1.0 - expectile)
    return weight * diff.square()


class GaussianPolicy(nn.Module):
    """``pi(a|s) = N(tanh(mu(s)), diag(exp(log_std)^2))`` with a state-independent ``log_std``."""

    def __init__(self, n_seeds: int, obs_dim: int, act_dim: int, hidden_dims: tuple[int, ...], dropout: float):
        super().__init__()
        self.trunk = SeedMLP(n_seeds, (obs_dim, *hidden_dims), activate_final=True, dropout=dropout)
        self.mean = SeedLinear(n_seeds, hidden_dims[-1], act_dim)
        self.log_std = nn.Parameter(torch.zeros(n_seeds, 1, act_dim))

    def init_(self, streams: SeedStreams) -> GaussianPolicy:
        self.trunk.init_(streams, orthogonal(math.sqrt(2)))
        init_seed_linear_(self.mean, streams, orthogonal(math.sqrt(2)))
        return self

    def mode(self, observations: Tensor, dropout_streams: SeedStreams | None = None) -> Tensor:
        return torch.tanh(self.mean(self.trunk(observations, dropout_streams)))

    def log_prob(self, observations: Tensor, actions: Tensor, log_std_min: float, log_std_max: float,
                 dropout_streams: SeedStreams | None = None) -> Tensor:
        mean = self.mode(observations, dropout_streams)
        log_std = self.log_std.clamp(log_std_min, log_std_max)
        z = (actions - mean) * torch.exp(-log_std)
        return (-0.5 * z.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def cosine_decay(total_steps: int):
    """Multiplier of optax.cosine_decay_schedule(init, total_steps): 0.5 (1 + cos(pi min(n, T) / T))."""
    return lambda n: cosine_annealing(min(n, total_steps), total_steps)


class IQL(Agent):
    name = "iql"
    Config = IQLConfig
    config: IQLConfig

    def __init__(self, obs_dim: int, act_dim: int, config: IQLConfig, seeds, device):
        super().__init__(obs_dim, act_dim, config, seeds, device)
        init = SeedStreams(self.seeds, "iql/init", "cpu")
        n, hidden = self.n_seeds, config.hidden_dims
        self.actor = GaussianPolicy(n, obs_dim, act_dim, hidden, config.actor_dropout).init_(init).to(self.device)
        self.critic = TwinQ(n, obs_dim, act_dim, hidden).init_(init, orthogonal(math.sqrt(2))).to(self.device)
        self.value = SeedMLP(n, (obs_dim, *hidden, 1)).init_(init, orthogonal(math.sqrt(2))).to(self.device)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = adam(self.actor.parameters(), lr=config.actor_lr)
        self.critic_opt = adam(self.critic.parameters(), lr=config.critic_lr)
        self.value_opt = adam(self.value.parameters(), lr=config.value_lr)
        schedules = {"cosine": cosine_decay(config.steps), "constant": lambda n: 1.0}
        self.actor_schedule = torch.optim.lr_scheduler.LambdaLR(self.actor_opt, schedules[config.actor_lr_schedule])
        self.dropout_noise = SeedStreams(self.seeds, "iql/dropout", self.device)

    def preprocess(self, data: Transitions) -> Transitions:
        limit = 1.0 - self.config.action_clip_eps
        data = super().preprocess(data)
        return data.replace(actions=data.actions.clamp(-limit, limit))

    def learn(self, batch: Batch) -> dict[str, Tensor]:
        cfg = self.config
        obs, actions = batch.observations, batch.actions
        with torch.no_grad():
            target_q = torch.minimum(*self.target_critic(obs, actions))

        v = self.value(obs).squeeze(-1)
        value_loss = expectile_loss(target_q - v, cfg.expectile).mean(-1)
        self.value_opt.zero_grad(set_to_none=True)
        value_loss.sum().backward()
        self.value_opt.step()

        with torch.no_grad():
            advantage = target_q - self.value(obs).squeeze(-1)
            weights = torch.exp(advantage * cfg.temperature).clamp(max=cfg.max_weight)
            next_v = self.value(batch.next_observations).squeeze(-1)
            td_target = batch.rewards + cfg.discount * (1.0 - batch.terminals) * next_v

        dropout = self.dropout_noise if cfg.actor_dropout > 0 else None
        log_prob = self.actor.log_prob(obs, actions, cfg.log_std_min, cfg.log_std_max, dropout)
        actor_loss = -(weights * log_prob).mean(-1)
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.sum().backward()
        self.actor_opt.step()  # then the actor's LR schedule steps (Agent.advance)

        q1, q2 = self.critic(obs, actions)
        critic_loss = ((q1 - td_target).square() + (q2 - td_target).square()).mean(-1)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.sum().backward()
        self.critic_opt.step()
        polyak_(self.target_critic, self.critic, cfg.tau)
        return {
            "value_loss": value_loss.detach(),
            "actor_loss": actor_loss.detach(),
            "critic_loss": critic_loss.detach(),
            "q": q1.detach().mean(-1),
            "v": v.detach().mean(-1),
            "advantage": advantage.mean(-1),
            "awr_weight": weights.mean(-1),
        }

    @torch.no_grad()
    def act(self, observations: Tensor) -> Tensor:
        return self.actor.mode(observations).clamp(-1.0, 1.0)
