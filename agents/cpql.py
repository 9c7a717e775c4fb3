"""CPQL: Consistency Policy Q-Learning (Chen, Li & Zhao, "Boosting Continuous Control with
Consistency Policy", AAMAS 2024, arXiv 2310.06343).

Follows the official PyTorch code, cccedric/cpql (read at 34af0279): ``agents/ql_cm.py`` (the
update and ``sample_action``), ``agents/karras_diffusion.py`` (``KarrasDenoiser``: schedule,
scalings, ``consistency_losses``, ``sample_onestep``/``sample_multistep``), ``agents/model.py``
(``MLP``, ``Critic``), ``agents/helpers.py`` (``SinusoidalPosEmb``, ``EMA``) and ``main.py``
(``offline_hyperparameters``, the AntMaze switches).

**Policy**: a consistency model on actions, with the Karras boundary-condition scalings

    f_theta(x, sigma | s) = clip( c_skip(sigma) x + c_out(sigma) F_theta(c_in(sigma) x, 250 log(sigma + 1e-44), s), -1, 1 )
    c_skip = s_d^2 / ((sigma - s_min)^2 + s_d^2),  c_out = (sigma - s_min) s_d / sqrt(sigma^2 + s_d^2),
    c_in = 1 / sqrt(sigma^2 + s_d^2),

so that f_theta(x, sigma_min) = x. sigma_min 0.002, sigma_max 80, sigma_data 0.5, rho 7; the N = 40
Karras levels are ``sigma_i = (s_max^(1/rho) + i/(N-1) (s_min^(1/rho) - s_max^(1/rho)))^rho``, i = 0..39,
from sigma_max down to sigma_min (the code's order). F_theta is DQL's ``MLP``: a sinusoidal time
embedding (16) -> Linear 32 -> Mish -> Linear 16, then ``[x, t_emb, s]`` -> 3x256 Mish -> act_dim.

**Sampling**: one step, ``a = f_theta(sigma_max z, sigma_0 | s)`` (MuJoCo, ``sampler="onestep"``), or
"multistep" (AntMaze): the one-step sample, then for each Karras index t in ``ts = [0, 20, 40]``:
``sigma = clip(sigma_t, s_min, s_max)``, ``x <- f_theta(x + sqrt(sigma^2 - s_min^2) z, sigma | s)``:
4 network evaluations. As coded, index 0 is sigma_max (the second evaluation re-noises at ~80),
and index 40 lies past the last level (39), below sigma_min, so it is clipped to sigma_min: the
last round adds no noise and f(x, sigma_min) = x, i.e. it costs an evaluation and changes nothing.

**Actor loss** ``alpha * L_bc + eta * L_q``:

- ``L_bc`` as released (``consistency_losses`` returns ``terms["loss"] = recon_loss``): the
  Karras-weighted reconstruction ``lambda(sigma_n) mean_j (f_theta(a + sigma_n z, sigma_n | s) - a)_j^2``
  with n ~ U{0, ..., N-2} (``randint(0, num_scales - 1)``) and ``lambda(sigma) = 1/sigma^2 + 1/s_d^2``
  (weight schedule "karras"). ``bc_loss = "consistency"`` switches to the paper's consistency-training
  term ``lambda(sigma_n) mean_j (f_theta(x_n, sigma_n | s) - f_theta-(x_{n+1}, sigma_{n+1} | s))_j^2``
  with ``x_n = a + sigma_n z``, ``x_{n+1}`` one Euler step from x_n towards a (``= a + sigma_{n+1} z``)
  and theta- the EMA target actor; the official code computes this term every step but does not
  optimise it. Both are reported as metrics.
- ``L_q = -Q_i(s, a_theta).mean() / |Q_j(s, a_theta)|.mean()`` (normaliser detached, head i at random),
  a_theta sampled from the online actor with gradient (through all 4 evaluations when multistep).

**Critic**: double Q, each 3x256 Mish with LayerNorm (``rl_type="offline"``), TD target
``r + gamma (1 - d) min_i Q'_i(s', a')`` with a' sampled from the ONLINE actor (``self.diffusion.sample(
model=self.actor)``), max over 10 samples per head on AntMaze (max-Q backup); loss
``mse(Q1, y) + mse(Q2, y)``. Critic lr hard-coded 3e-4.

**Order of one step** (``ql_cm.py train``): critic step (clip per seed at ``gn``), then actor step on
the updated critic (clip at the same ``gn``), then, when ``step % 5 == 0 and step >= 1000``, EMA
(0.995) of BOTH the actor target and the critic target: the critic target is this EMA, there is no
tau = 0.005 Polyak update. Both targets keep their initial weights until step 1000.
``--lr_decay`` (off by default, and off here): ``CosineAnnealingLR(T_max=num_epochs)`` stepped every
gradient step for both optimisers, i.e. a cosine with a period of 2 num_epochs *steps* (4000 steps
on MuJoCo) rather than a decay over the run; implemented as coded when switched on.

**Inference** (``sample_action``): 50 candidates from the online actor, one picked with probabilities
``softmax(min_i Q'_i(s, a_k))`` over the target critic, clipped to [-1, 1].
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
from typing import Literal

import torch
from torch import Tensor, nn

from agents.base import Agent, AgentConfig, Batch, SeedStreams
from agents.nets import (SeedMLP, adam, clip_grad_norm_per_seed_, cosine_annealing, mish, sinusoidal_embedding,
                         torch_default)
from agents.qlearning import act_by_q, coin, dql_critic, ema_, ema_due, normalised_q_loss, sampled_td_target

TIME_SCALE = 1000 * 0.25  # karras_diffusion.py denoise: rescaled_t = 1000 * 0.25 * log(sigma + 1e-44)


@dataclasses.dataclass
class CPQLConfig(AgentConfig):
    lr: float  # actor Adam lr (main.py per task: 3e-4; 1e-3 antmaze-medium-play; 3e-5 pen)
    critic_lr: float  # critic Adam lr, hard-coded 3e-4 in ql_cm.py
    alpha: float  # weight of the BC term, 1.0 for every offline task
    eta: float  # weight of the Q term, per task
    grad_norm: float  # gn: per-seed max grad norm for actor and critic, per task; <= 0 disables clipping
    discount: float  # 0.99
    max_q_backup: bool  # max over sampled next actions in the TD target (AntMaze)
    max_q_samples: int  # next actions per state in the max-Q backup, 10 (ql_cm.py repeats=10)
    sampler: Literal["onestep", "multistep"]  # "onestep" (MuJoCo) or "multistep" (AntMaze)
    multistep_levels: tuple[int, ...]  # Karras indices ts of the multistep sampler, [0, 20, 40]
    bc_loss: Literal["recon", "consistency"]  # "recon" (released code: terms["loss"] = recon_loss) or "consistency" (paper)
    sigma_min: float  # 0.002
    sigma_max: float  # 80.0
    sigma_data: float  # 0.5
    rho: float  # 7.0
    num_scales: int  # Karras levels N, 40 (steps=40, num_scales=40)
    weight_schedule: Literal["karras", "snr", "snr+1", "truncated-snr", "uniform"]  # lambda(sigma): "karras" = 1/sigma^2 + 1/sigma_data^2
    hidden_dim: int  # 256, actor and critic
    t_dim: int  # 16, time embedding width of the actor MLP
    critic_layer_norm: bool  # LayerNorm in the critic (rl_type "offline")
    ema_decay: float  # 0.995, actor target and critic target
    ema_start: int  # 1000 (step_start_ema)
    ema_every: int  # 5 (update_ema_every)
    lr_decay: bool  # --lr_decay, off by default
    lr_decay_t_max: int  # CosineAnnealingLR T_max = num_epochs, stepped every gradient step (as coded)
    num_candidates: int  # 50 candidates at inference (sample_action)


@dataclasses.dataclass(frozen=True)
class KarrasSchedule:
    """The noise levels, boundary-condition scalings and loss weights of ``KarrasDenoiser``."""

    sigma_min: float
    sigma_max: float
    sigma_data: float
    rho: float
    num_scales: int
    weight_schedule: str = "karras"

    def sigma(self, index: Tensor | float) -> Tensor | float:
        """Level ``index`` (0 = sigma_max, N-1 = sigma_min), ``(s_max^(1/rho) + i/(N-1) (s_min^(1/rho) - s_max^(1/rho)))^rho``."""
        hi, lo = self.sigma_max ** (1 / self.rho), self.sigma_min ** (1 / self.rho)
        return (hi + index / (self.num_scales - 1) * (lo - hi)) ** self.rho

    def sigmas(self) -> Tensor:
        """The N levels as ``get_sigmas_karras`` builds them (linspace ramp, descending; its appended 0 is unused)."""
        ramp = torch.linspace(0, 1, self.num_scales)
        hi, lo = self.sigma_max ** (1 / self.rho), self.sigma_min ** (1 / self.rho)
        return (hi + ramp * (lo - hi)) ** self.rho

    def scalings(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``get_scalings_for_boundary_condition``: (c_skip, c_out, c_in)."""
        sd2 = self.sigma_data**2
        c_skip = sd2 / ((sigma - self.sigma_min) ** 2 + sd2)
        c_out = (sigma - self.sigma_min) * self.sigma_data / (sigma**2 + sd2) ** 0.5
        c_in = 1 / (sigma**2 + sd2) ** 0.5
        return c_skip, c_out, c_in

    def weight(self, sigma: Tensor) -> Tensor:
        """``get_weightings(weight_schedule, snr = sigma^-2, sigma_data)``."""
        snr = sigma**-2
        weights = {
            "karras": lambda: snr + 1.0 / self.sigma_data**2,
            "snr": lambda: snr,
            "snr+1": lambda: snr + 1,
            "truncated-snr": lambda: snr.clamp(min=1.0),
            "uniform": lambda: torch.ones_like(snr),
        }
        return weights[self.weight_schedule]()


class ConsistencyMLP(nn.Module):
    """F_theta of ``agents/model.py MLP`` (= DQL's): ``[x, time_mlp(emb(t)), s]`` -> 3x256 Mish -> act_dim."""

    def __init__(self, n_seeds: int, obs_dim: int, act_dim: int, hidden: int, t_dim: int):
        super().__init__()
        self.t_dim = t_dim
        self.time_mlp = SeedMLP(n_seeds, (t_dim, 2 * t_dim, t_dim), mish)
        self.mid = SeedMLP(n_seeds, (act_dim + t_dim + obs_dim, hidden, hidden, hidden, act_dim), mish)

    def init_(self, streams: SeedStreams) -> ConsistencyMLP:
        self.time_mlp.init_(streams, torch_default, bias="torch_default")
        self.mid.init_(streams, torch_default, bias="torch_default")
        return self

    def forward(self, x: Tensor, time: Tensor, observations: Tensor) -> Tensor:
        t = self.time_mlp(sinusoidal_embedding(time, self.t_dim))
        return self.mid(torch.cat([x, t, observations], dim=-1))


def denoise(net: nn.Module, schedule: KarrasSchedule, x: Tensor, sigma: Tensor | float, observations: Tensor) -> Tensor:
    """``f(x, sigma | s) = clip(c_skip x + c_out F(c_in x, 250 log(sigma + 1e-44), s), -1, 1)``; ``sigma`` is
    ``x.shape[:-1]`` or a number (``KarrasDenoiser.denoise`` with ``clip_denoised=True``)."""
    if not isinstance(sigma, Tensor):
        sigma = x.new_full(x.shape[:-1], sigma)
    c_skip, c_out, c_in = (c[..., None] for c in schedule.scalings(sigma))
    out = net(c_in * x, TIME_SCALE * torch.log(sigma + 1e-44), observations)
    return (c_out * out + c_skip * x).clamp(-1.0, 1.0)


def sample_actions(net: nn.Module, schedule: KarrasSchedule, observations: Tensor, act_dim: int,
                   streams: SeedStreams, renoise_sigmas: tuple[float, ...]) -> Tensor:
    """``KarrasDenoiser.sample``: ``x = f(sigma_max z, sigma_0 | s)`` (sigma_0 = sigma_max), then for each sigma in
    ``renoise_sigmas`` (empty for one step): ``x = f(x + sqrt(sigma^2 - s_min^2) z', sigma | s)``."""
    shape = (*observations.shape[1:-1], act_dim)
    x = streams.randn(*shape) * schedule.sigma_max
    x = denoise(net, schedule, x, schedule.sigma(0.0), observations)
    for sigma in renoise_sigmas:
        x = x + streams.randn(*shape) * math.sqrt(sigma**2 - schedule.sigma_min**2)
        x = denoise(net, schedule, x, sigma, observations)
    return x.clamp(-1.0, 1.0)


def consistency_bc_losses(actor: nn.Module, target_actor: nn.Module, schedule: KarrasSchedule, observations: Tensor,
                          actions: Tensor, noise: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
    """``KarrasDenoiser.consistency_losses`` per sample, ``[n_seeds, B]`` each:

    recon        = lambda(sigma_n) mean_j (f_theta(x_n, sigma_n) - a)_j^2
    consistency  = lambda(sigma_n) mean_j (f_theta(x_n, sigma_n) - f_theta-(x_{n+1}, sigma_{n+1}))_j^2

    with ``x_n = a + sigma_n z`` and ``x_{n+1} = x_n + (x_n - a)/sigma_n (sigma_{n+1} - sigma_n)`` (one Euler step
    of the probability-flow ODE with the data as denoiser); the target branch carries no gradient.
    """
    t = schedule.sigma(indices)
    t2 = schedule.sigma(indices + 1)
    x_t = actions + noise * t[..., None]
    distiller = denoise(actor, schedule, x_t, t, observations)
    with torch.no_grad():
        x_t2 = x_t + (x_t - actions) / t[..., None] * (t2 - t)[..., None]
        distiller_target = denoise(target_actor, schedule, x_t2, t2, observations)
    weights = schedule.weight(t)
    recon = (distiller - actions).square().mean(-1) * weights
    consistency = (distiller - distiller_target).square().mean(-1) * weights
    return recon, consistency


class CPQL(Agent):
    name = "cpql"
    Config = CPQLConfig
    config: CPQLConfig

    def __init__(self, obs_dim: int, act_dim: int, config: CPQLConfig, seeds, device):
        super().__init__(obs_dim, act_dim, config, seeds, device)
        self.schedule = KarrasSchedule(config.sigma_min, config.sigma_max, config.sigma_data, config.rho,
                                       config.num_scales, config.weight_schedule)
        # sample_multistep: t = clip(sigma(ts[i]), sigma_min, sigma_max) in float64, as the code's numpy
        self.renoise_sigmas = tuple(
            min(max(self.schedule.sigma(float(i)), config.sigma_min), config.sigma_max) for i in config.multistep_levels
        ) if config.sampler == "multistep" else ()

        init = SeedStreams(self.seeds, "cpql/init", "cpu")
        n = self.n_seeds
        self.actor = ConsistencyMLP(n, obs_dim, act_dim, config.hidden_dim, config.t_dim).init_(init).to(self.device)
        self.critic = dql_critic(n, obs_dim, act_dim, init, hidden=config.hidden_dim,
                                 layer_norm=config.critic_layer_norm).to(self.device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = adam(self.actor.parameters(), lr=config.lr)
        self.critic_opt = adam(self.critic.parameters(), lr=config.critic_lr)
        if config.lr_decay:  # CosineAnnealingLR(T_max, eta_min=0) stepped every update, in closed form
            decay = functools.partial(cosine_annealing, t_max=config.lr_decay_t_max)
            self.actor_schedule = torch.optim.lr_scheduler.LambdaLR(self.actor_opt, decay)
            self.critic_schedule = torch.optim.lr_scheduler.LambdaLR(self.critic_opt, decay)
        self.noise = SeedStreams(self.seeds, "cpql/noise", self.device)
        self.act_noise = SeedStreams(self.seeds, "cpql/act", self.device)

    def sample(self, net: nn.Module, observations: Tensor, streams: SeedStreams) -> Tensor:
        """The configured sampler (one step, or multistep) with network ``net``."""
        return sample_actions(net, self.schedule, observations, self.act_dim, streams, self.renoise_sigmas)

    def control_key(self) -> tuple[bool]:
        return (ema_due(self.step, self.config.ema_start, self.config.ema_every),)

    def learn(self, batch: Batch) -> dict[str, Tensor]:
        cfg = self.config
        obs, actions = batch.observations, batch.actions

        # critic: TD target with a' from the online actor (max over 10 samples per head on AntMaze)
        target = sampled_td_target(self.critic_target, batch, lambda s: self.sample(self.actor, s, self.noise),
                                   cfg.discount, cfg.max_q_backup, cfg.max_q_samples)
        q1, q2 = self.critic(obs, actions)
        critic_loss = ((q1 - target).square() + (q2 - target).square()).mean(-1)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.sum().backward()
        critic_grad_norm = clip_grad_norm_per_seed_(self.critic.parameters(), cfg.grad_norm)
        self.critic_opt.step()

        # actor: alpha * BC (consistency model) + eta * normalised Q of a fresh sample, on the updated critic
        noise = self.noise.randn(*actions.shape[1:])
        indices = self.noise.randint(cfg.num_scales - 1, actions.shape[1])
        recon, consistency = consistency_bc_losses(self.actor, self.actor_target, self.schedule, obs, actions,
                                                   noise, indices)
        bc_loss = (recon if cfg.bc_loss == "recon" else consistency).mean(-1)
        new_actions = self.sample(self.actor, obs, self.noise)
        q_loss = normalised_q_loss(self.critic, obs, new_actions, coin(self.noise))
        actor_loss = cfg.alpha * bc_loss + cfg.eta * q_loss
        actor_params = list(self.actor.parameters())
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.sum().backward(inputs=actor_params)  # the critic's gradients are not wanted here
        actor_grad_norm = clip_grad_norm_per_seed_(actor_params, cfg.grad_norm)
        self.actor_opt.step()

        # targets: EMA of actor AND critic, every 5 steps from step 1000 (step counted before this update)
        if ema_due(self.step, cfg.ema_start, cfg.ema_every):
            ema_(self.actor_target, self.actor, cfg.ema_decay)
            ema_(self.critic_target, self.critic, cfg.ema_decay)

        return {
            "critic_loss": critic_loss.detach(),
            "actor_loss": actor_loss.detach(),
            "bc_loss": bc_loss.detach(),
            "recon_loss": recon.detach().mean(-1),
            "consistency_loss": consistency.detach().mean(-1),
            "q_loss": q_loss.detach(),
            "q": q1.detach().mean(-1),
            "target_q": target.mean(-1),
            "critic_grad_norm": critic_grad_norm,
            "actor_grad_norm": actor_grad_norm,
        }

    @torch.no_grad()
    def act(self, observations: Tensor) -> Tensor:
        """``sample_action``: ``num_candidates`` samples of the online actor per state, one drawn by
        softmax(min Q') of the target critic."""
        chosen = act_by_q(observations, self.config.num_candidates,
                          lambda s: self.sample(self.actor, s, self.act_noise), self.critic_target, self.act_noise)
        return chosen.clamp(-1.0, 1.0)
