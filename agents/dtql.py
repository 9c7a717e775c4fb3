"""DTQL: Diffusion Trusted Q-Learning (Chen, Wang & Zhou, "Diffusion Policies creating a Trust Region
for Offline Reinforcement Learning", NeurIPS 2024).

Follows the official PyTorch code, TianyuCodings/Diffusion_Trusted_Q_Learning (read at 9a29cea):
``agents/dtql.py`` (the update and ``sample_action``), ``agents/model.py`` (``Critic``,
``DiagGaussianActorTanhAction``), ``diffusion/karras.py`` (``DiffusionModel``: EDM scalings, loss,
sigma density), ``diffusion/mlps.py`` (``ScoreNetwork``, ``MLPNetwork``), ``diffusion/utils.py``
(``rand_log_logistic``), ``main.py`` (per-task table, pre-training, schedules) and
``utils/data_sampler.py`` (rewards). Three networks are learned together:

1. A diffusion behaviour-cloning policy in the EDM (Karras et al. 2022) parameterisation,
   ``D_phi(x, sigma | s) = clamp(c_skip x + c_out F_phi(c_in x, s, log(sigma) / 4), -1, 1)`` with
   ``c_skip = s_d^2 / (sigma^2 + s_d^2)``, ``c_out = sigma s_d / sqrt(sigma^2 + s_d^2)``,
   ``c_in = 1 / sqrt(sigma^2 + s_d^2)``, ``s_d = 0.5``, trained on the dataset's actions by

       L_BC(phi) = E_{sigma, z, (s, a)} [ ((D_phi(a + sigma z, sigma | s) - a) / c_out(sigma))^2 ],

   ``sigma`` from a log-logistic density (loc ``log s_d``, scale 0.5) truncated to [0.002, 80].
2. A one-step policy ``pi_theta``: a diagonal Gaussian on ``s`` (3x256 ReLU MLP, orthogonal init,
   log-std clamped to [-5, 2]) whose reparameterised sample is squashed, ``a_theta = tanh(mu +
   std eps)``. It minimises

       L_pi(theta) = alpha L_TR(theta) - E_s[min(Q1, Q2)(s, a_theta)] + gamma E_(s,a)~D[-log pi(a | s)],
       L_TR(theta) = E_{sigma, z, s} [ ((D_phi(a_theta + sigma z, sigma | s) - a_theta) / c_out(sigma))^2 ],

   the *diffusion trust-region loss*: the BC denoising loss evaluated on the generated action with
   the BC denoiser fixed (gradients flow through ``D_phi`` into ``a_theta``; ``phi`` is not
   changed by this term). The Q term is not |Q|-normalised; ``gamma`` is 1 on AntMaze, 0 elsewhere,
   and ``log pi(a | s)`` is the Gaussian density of ``atanh(a / 1.001)`` without the tanh Jacobian,
   as coded.
3. An IQL critic (``q_v_critic_loss``), one loss and one Adam step for Q1, Q2 and V together:

       L = E[ |tau - 1(u < 0)| u^2 ] + sum_i E[(r + gamma_d (1 - d) V(s') - Q_i(s, a))^2],
       u = min(Q1, Q2)(s, a) - V(s),

   where ``min Q`` (the value's target) comes from the *current* critic without gradient and ``V(s')``
   from the *current* value without gradient: no target network enters training. ``Q_i`` are
   Linear-LayerNorm-Mish x3 (256) MLPs, ``V`` is Linear-Mish x3 (256) without LayerNorm. The Polyak
   copy ``Q'`` (rate 0.005) is used only to rank candidate actions at inference.

Schedule of one run (``steps = pretrain_steps + num_epochs * 1000`` of the official code). The
official ``main.py`` first pre-trains the BC diffusion and the critic for ``pretrain_epochs = 50``
epochs (``DTQL.pretrain``: 50,000 steps of BC step then critic step, no target update, no LR
schedule, no actor), then runs ``agent.train`` ``num_epochs * 1000 + 1`` times. Here both phases are
one ``learn`` driven by ``self.step`` (its ``control_key``): steps ``[0, pretrain_steps)`` are the
pre-training steps and the remaining ``steps - pretrain_steps`` are the main phase, in the official
order: critic step; BC diffusion step; one-step actor step (against the critic and the BC denoiser just updated); Polyak
update of ``Q'``; with ``lr_decay``, one ``CosineAnnealingLR`` step (``T_max = num_epochs * 1000 =
steps - pretrain_steps``, ``eta_min = 0``) of all three optimisers, critic included. The official
loop's one extra main step (``while training_iters < max_timesteps + 1``) is not reproduced.

Inference (``sample_action``): 1024 actions from the one-step Gaussian policy per state, one of them
drawn with probabilities ``softmax(min(Q1', Q2')(s, a_k))`` of the *target* critic. No diffusion
sampling happens anywhere.

Left out because nothing uses them: the official EMA copy of the one-step actor
(``distill_actor_target``, 0.995 every 5 steps from step 1000; ``sample_action`` uses the online
actor) and ``bc_actor_target``. The harness's actions are in [-1, 1], so ``max_action = 1``.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from agents.base import Agent, AgentConfig, Batch, SeedStreams
from agents.iql import expectile_loss
from agents.nets import (
    SeedLinear, SeedMLP, adam, cosine_annealing, init_seed_linear_, mish, orthogonal, polyak_, sinusoidal_embedding,
    torch_default,
)
from agents.qlearning import act_by_q, dql_critic


@dataclasses.dataclass
class DTQLConfig(AgentConfig):
    # steps = pretrain_steps + main-phase steps (official num_epochs * 1000); batch_size is used by
    # both phases (256 MuJoCo, 2048 AntMaze); reward_transform "none" ("no"), AntMaze "iql_antmaze".
    pretrain_steps: int  # BC diffusion + critic steps before the actor trains: pretrain_epochs 50 -> 50_000
    lr: float  # BC diffusion and one-step actor Adam lr, per task (main.py table)
    critic_lr: float  # 3e-4, hard-coded in DTQL.__init__
    lr_decay: bool  # per task: CosineAnnealingLR(T_max = steps - pretrain_steps) on all three optimisers
    alpha: float  # weight of the trust-region loss, per task
    gamma: float  # weight of -log pi(a_data | s): 1.0 AntMaze, 0.0 otherwise
    expectile: float  # IQL expectile: 0.7 MuJoCo, 0.9 AntMaze
    discount: float  # 0.99
    tau: float  # Polyak rate of the inference-only target critic, 0.005
    sigma_data: float  # EDM sigma_data, 0.5
    sigma_min: float  # 0.002, lower truncation of the sigma density
    sigma_max: float  # 80, upper truncation
    sigma_density_scale: float  # scale of the log-logistic sigma density, 0.5 (karras.py); loc = log(sigma_data)
    clip_denoised: bool  # True: D is clamped to [-1, 1] inside the loss (DiffusionModel(clip_denoised=True))
    hidden_dim: int  # 256: score network, one-step actor, Q and V
    score_hidden_layers: int  # MLPNetwork num_hidden_layers, 4
    time_embed_dim: int  # ScoreNetwork time_embed_dim, 16
    actor_hidden_layers: int  # DiagGaussianActorTanhAction hidden_depth, 3
    log_std_min: float  # -5 (log_std_bounds)
    log_std_max: float  # 2
    num_candidates: int  # actions sampled per state at inference: --repeats 1024

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.pretrain_steps < self.steps:
            raise ValueError(f"pretrain_steps ({self.pretrain_steps}) must be in [0, steps = {self.steps})")


# ------------------------------------------------------------------------------------------------
# EDM pieces (diffusion/karras.py, diffusion/utils.py)


def edm_scalings(sigma: Tensor, sigma_data: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(c_skip, c_out, c_in)`` of EDM (``DiffusionModel.get_diffusion_scalings``)."""
    c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
    c_out = sigma * sigma_data / (sigma**2 + sigma_data**2) ** 0.5
    c_in = 1.0 / (sigma**2 + sigma_data**2) ** 0.5
    return c_skip, c_out, c_in


def sample_sigma(streams: SeedStreams, n: int, loc: float, scale: float, sigma_min: float, sigma_max: float) -> Tensor:
    """``[n_seeds, n]`` noise levels from a log-logistic(loc, scale) density truncated to
    ``[sigma_min, sigma_max]`` by inverse-CDF sampling in float64 (``rand_log_logistic``)."""
    min_cdf = 1.0 / (1.0 + math.exp(-(math.log(sigma_min) - loc) / scale))
    max_cdf = 1.0 / (1.0 + math.exp(-(math.log(sigma_max) - loc) / scale))
    u = torch.stack([torch.rand(n, generator=g, device=streams.device, dtype=torch.float64) for g in streams.generators])
    u = u * (max_cdf - min_cdf) + min_cdf
    return (u.logit() * scale + loc).exp().float()


class ScoreNetwork(nn.Module):
    """``F_phi(x, s, t)`` of ``diffusion/mlps.py``: ``t`` is embedded by ``SinusoidalPosEmb(16)`` ->
    Linear(16, 32) -> Mish -> Linear(32, 16); ``[x, s, emb]`` goes through ``MLPNetwork``, i.e.
    Linear(in, 256), then ``num_hidden_layers - 1`` x [Linear(256, 256), Mish], then Linear(256, out).
    The first Linear has no activation after it, as coded. ``nn.Linear`` default init throughout."""

    def __init__(self, n_seeds: int, obs_dim: int, act_dim: int, hidden: int, hidden_layers: int, time_embed_dim: int):
        super().__init__()
        self.time_embed_dim = time_embed_dim
        self.embed = SeedMLP(n_seeds, (time_embed_dim, 2 * time_embed_dim, time_embed_dim), mish)
        self.first = SeedLinear(n_seeds, act_dim + obs_dim + time_embed_dim, hidden)
        self.rest = SeedMLP(n_seeds, (hidden,) * hidden_layers + (act_dim,), mish)

    def init_(self, streams: SeedStreams) -> ScoreNetwork:
        self.embed.init_(streams, torch_default, bias="torch_default")
        init_seed_linear_(self.first, streams, torch_default, bias="torch_default")
        self.rest.init_(streams, torch_default, bias="torch_default")
        return self

    def forward(self, x: Tensor, observations: Tensor, t: Tensor) -> Tensor:
        emb = self.embed(sinusoidal_embedding(t, self.time_embed_dim))
        return self.rest(self.first(torch.cat([x, observations, emb], dim=-1)))


def denoise(net: ScoreNetwork, noisy: Tensor, observations: Tensor, sigma: Tensor, sigma_data: float,
            clip: bool) -> Tensor:
    """``D_phi(x_sigma, sigma | s) = c_skip x_sigma + c_out F_phi(c_in x_sigma, s, log(sigma) / 4)``,
    clamped to [-1, 1] when ``clip``; ``sigma`` is ``[n_seeds, B]``, ``noisy`` ``[n_seeds, B, act_dim]``."""
    c_skip, c_out, c_in = (c[..., None] for c in edm_scalings(sigma, sigma_data))
    denoised = c_skip * noisy + c_out * net(noisy * c_in, observations, torch.log(sigma) / 4)
    return denoised.clamp(-1.0, 1.0) if clip else denoised


def denoising_loss(net: ScoreNetwork, actions: Tensor, observations: Tensor, sigma: Tensor, noise: Tensor,
                   sigma_data: float, clip: bool) -> Tensor:
    """Per-seed ``mean(((D_phi(a + sigma z, sigma | s) - a) / c_out(sigma))^2)`` over batch and action
    dimensions (``DiffusionModel.diffusion_loss``); ``[n_seeds]``. Without ``clip`` this equals the
    code's ``mean((F - (a - c_skip x_sigma) / c_out)^2)``. Both L_BC (data actions) and L_TR
    (generated actions) are this loss."""
    noisy = actions + noise * sigma[..., None]
    c_out = edm_scalings(sigma, sigma_data)[1][..., None]
    denoised = denoise(net, noisy, observations, sigma, sigma_data, clip)
    return ((denoised - actions) / c_out).square().mean(dim=(-2, -1))


# ------------------------------------------------------------------------------------------------
# One-step policy and critic (agents/model.py)


class GaussianTanhActor(nn.Module):
    """``DiagGaussianActorTanhAction``: ``(mu, log_std) = MLP(s)`` (ReLU, orthogonal kernels with gain
    1, zero biases), ``log_std`` clamped, ``a = clamp(tanh(mu + exp(log_std) eps), -1, 1)``."""

    def __init__(self, n_seeds: int, obs_dim: int, act_dim: int, hidden: int, hidden_layers: int,
                 log_std_min: float, log_std_max: float):
        super().__init__()
        self.net = SeedMLP(n_seeds, (obs_dim, *[hidden] * hidden_layers, 2 * act_dim), F.relu)
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def init_(self, streams: SeedStreams) -> GaussianTanhActor:
        self.net.init_(streams, orthogonal(1.0))
        return self

    def gaussian(self, observations: Tensor) -> tuple[Tensor, Tensor]:
        mu, log_std = self.net(observations).chunk(2, dim=-1)
        return mu, log_std.clamp(self.log_std_min, self.log_std_max)

    def sample(self, observations: Tensor, eps: Tensor) -> Tensor:
        """Reparameterised sample for standard-normal ``eps`` (``rsample``), squashed by tanh."""
        mu, log_std = self.gaussian(observations)
        return torch.tanh(mu + log_std.exp() * eps).clamp(-1.0, 1.0)

    def log_prob(self, observations: Tensor, actions: Tensor) -> Tensor:
        """``sum_j log N(atanh(a_j / 1.001); mu_j, std_j)`` as coded (no tanh Jacobian; ``max_action + 1e-3``)."""
        mu, log_std = self.gaussian(observations)
        z = (torch.atanh(actions / (1.0 + 1e-3)) - mu) * torch.exp(-log_std)
        return (-0.5 * z.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


class IQLCritic(nn.Module):
    """``Critic`` of ``agents/model.py``: ``q`` = twin Linear-LayerNorm-Mish x3 nets on ``[s, a]``,
    ``v`` = Linear-Mish x3 on ``s``, all ``nn.Linear`` default init; one module, one optimiser."""

    def __init__(self, n_seeds: int, obs_dim: int, act_dim: int, hidden: int, streams: SeedStreams):
        super().__init__()
        self.q = dql_critic(n_seeds, obs_dim, act_dim, streams, hidden=hidden, layer_norm=True)
        self.v = SeedMLP(n_seeds, (obs_dim, hidden, hidden, hidden, 1), mish).init_(
            streams, torch_default, bias="torch_default"
        )

    def q_min(self, observations: Tensor, actions: Tensor) -> Tensor:
        return torch.minimum(*self.q(observations, actions))

    def value(self, observations: Tensor) -> Tensor:
        return self.v(observations).squeeze(-1)


def iql_critic_loss(critic: IQLCritic, batch: Batch, discount: float, expectile: float) -> dict[str, Tensor]:
    """``q_v_critic_loss``: per-seed ``L_V + MSE(Q1, y) + MSE(Q2, y)`` with the value's target
    ``min(Q1, Q2)(s, a)`` of the current critic (no gradient) and ``y = r + discount (1 - d) V(s')``
    of the current value (no gradient). ``q1, q2`` are computed once: the code's extra no-grad
    ``q_min`` pass gives the same numbers."""
    obs = batch.observations
    q1, q2 = critic.q(obs, batch.actions)
    v = critic.value(obs)
    value_loss = expectile_loss(torch.minimum(q1, q2).detach() - v, expectile).mean(-1)
    with torch.no_grad():
        target = batch.rewards + discount * (1.0 - batch.terminals) * critic.value(batch.next_observations)
    q_loss = (q1 - target).square().mean(-1) + (q2 - target).square().mean(-1)
    return {"critic_loss": value_loss + q_loss, "value_loss": value_loss, "q_loss": q_loss,
            "q": q1.detach().mean(-1), "v": v.detach().mean(-1)}


def actor_objective(trust_region: Tensor, q_min: Tensor, neg_log_prob: Tensor, alpha: float, gamma: float) -> Tensor:
    """``alpha L_TR - mean(min Q(s, a_theta)) + gamma mean(-log pi(a_data | s))``, per seed; ``q_min`` and
    ``neg_log_prob`` are ``[n_seeds, B]``, ``trust_region`` ``[n_seeds]``."""
    return alpha * trust_region - q_min.mean(-1) + gamma * neg_log_prob.mean(-1)


# ------------------------------------------------------------------------------------------------


class DTQL(Agent):
    name = "dtql"
    Config = DTQLConfig
    config: DTQLConfig

    def __init__(self, obs_dim: int, act_dim: int, config: DTQLConfig, seeds, device):
        super().__init__(obs_dim, act_dim, config, seeds, device)
        cfg, n = config, self.n_seeds
        init = SeedStreams(self.seeds, "dtql/init", "cpu")
        self.critic = IQLCritic(n, obs_dim, act_dim, cfg.hidden_dim, init).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.bc = ScoreNetwork(n, obs_dim, act_dim, cfg.hidden_dim, cfg.score_hidden_layers, cfg.time_embed_dim)
        self.bc = self.bc.init_(init).to(self.device)
        self.actor = GaussianTanhActor(n, obs_dim, act_dim, cfg.hidden_dim, cfg.actor_hidden_layers,
                                       cfg.log_std_min, cfg.log_std_max).init_(init).to(self.device)
        self.critic_opt = adam(self.critic.parameters(), lr=cfg.critic_lr)
        self.bc_opt = adam(self.bc.parameters(), lr=cfg.lr)
        self.actor_opt = adam(self.actor.parameters(), lr=cfg.lr)
        if cfg.lr_decay:  # CosineAnnealingLR(T_max, eta_min=0), stepped after each main-phase update
            t_max = cfg.steps - cfg.pretrain_steps  # num_epochs * num_steps_per_epoch

            def decay(n: int) -> float:  # n updates done, pre-training ones included
                return cosine_annealing(max(n - cfg.pretrain_steps, 0), t_max)

            self.critic_schedule = torch.optim.lr_scheduler.LambdaLR(self.critic_opt, decay)
            self.bc_schedule = torch.optim.lr_scheduler.LambdaLR(self.bc_opt, decay)
            self.actor_schedule = torch.optim.lr_scheduler.LambdaLR(self.actor_opt, decay)
        self.noise = SeedStreams(self.seeds, "dtql/noise", self.device)
        self.act_noise = SeedStreams(self.seeds, "dtql/act", self.device)

    @property
    def pretraining(self) -> bool:
        """Whether the next update is a pre-training step (BC diffusion and critic only)."""
        return self.step < self.config.pretrain_steps

    def _denoising_loss(self, actions: Tensor, observations: Tensor) -> Tensor:
        cfg = self.config
        sigma = sample_sigma(self.noise, actions.shape[1], math.log(cfg.sigma_data), cfg.sigma_density_scale,
                             cfg.sigma_min, cfg.sigma_max)
        noise = self.noise.randn(*actions.shape[1:])
        return denoising_loss(self.bc, actions, observations, sigma, noise, cfg.sigma_data, cfg.clip_denoised)

    def _bc_step(self, batch: Batch) -> Tensor:
        bc_loss = self._denoising_loss(batch.actions, batch.observations)
        self.bc_opt.zero_grad(set_to_none=True)
        bc_loss.sum().backward()
        self.bc_opt.step()
        return bc_loss.detach()

    def _critic_step(self, batch: Batch) -> dict[str, Tensor]:
        losses = iql_critic_loss(self.critic, batch, self.config.discount, self.config.expectile)
        self.critic_opt.zero_grad(set_to_none=True)
        losses["critic_loss"].sum().backward()
        self.critic_opt.step()
        return {k: v.detach() for k, v in losses.items()}

    def _actor_step(self, batch: Batch) -> dict[str, Tensor]:
        cfg = self.config
        obs = batch.observations
        new_actions = self.actor.sample(obs, self.noise.randn(*batch.actions.shape[1:]))
        trust_region = self._denoising_loss(new_actions, obs)
        q_min = self.critic.q_min(obs, new_actions)
        if cfg.gamma == 0.0:  # the code skips the log-likelihood term entirely
            neg_log_prob = torch.zeros_like(q_min)
        else:
            neg_log_prob = -self.actor.log_prob(obs, batch.actions)
        loss = actor_objective(trust_region, q_min, neg_log_prob, cfg.alpha, cfg.gamma)
        self.actor_opt.zero_grad(set_to_none=True)
        # Gradients flow through D_phi and Q into a_theta but are accumulated only in theta.
        loss.sum().backward(inputs=list(self.actor.parameters()))
        self.actor_opt.step()
        return {"actor_loss": loss.detach(), "trust_region_loss": trust_region.detach(),
                "ql_loss": -q_min.detach().mean(-1), "neg_log_prob": neg_log_prob.detach().mean(-1)}

    def control_key(self) -> tuple[bool]:
        return (self.pretraining,)

    def learn(self, batch: Batch) -> dict[str, Tensor]:
        if self.pretraining:  # DTQL.pretrain: BC step, then critic step; nothing else moves
            bc_loss = self._bc_step(batch)
            critic = self._critic_step(batch)
            return {"bc_loss": bc_loss, "critic_loss": critic["critic_loss"], "value_loss": critic["value_loss"],
                    "q": critic["q"], "v": critic["v"]}

        critic = self._critic_step(batch)  # DTQL.train: critic, BC diffusion, one-step actor, Polyak, LR
        bc_loss = self._bc_step(batch)
        actor = self._actor_step(batch)
        polyak_(self.critic_target, self.critic, self.config.tau)  # then the LR schedules step (Agent.advance)
        return {"bc_loss": bc_loss, "critic_loss": critic["critic_loss"], "value_loss": critic["value_loss"],
                "q": critic["q"], "v": critic["v"], **actor}

    @torch.no_grad()
    def act(self, observations: Tensor) -> Tensor:
        """``sample_action``: ``num_candidates`` one-step samples per state, one drawn by
        ``softmax(min(Q1', Q2'))`` of the target critic."""
        def sample(obs: Tensor) -> Tensor:
            return self.actor.sample(obs, self.act_noise.randn(*obs.shape[1:-1], self.act_dim))

        return act_by_q(observations, self.config.num_candidates, sample, self.critic_target.q, self.act_noise)
