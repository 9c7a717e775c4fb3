"""Diffusion-QL: diffusion policies for offline RL (Wang, Hunt & Zhou, ICLR 2023).

Follows the official PyTorch code, Zhendong-Wang/Diffusion-Policies-for-Offline-RL (read at d871f5c6):
``agents/ql_diffusion.py`` (agent, critic, update, ``sample_action``), ``agents/diffusion.py`` (DDPM),
``agents/helpers.py`` (VP schedule, sinusoidal embedding, EMA), ``agents/model.py`` (epsilon network),
``main.py`` (per-task settings, LR decay).

Policy: a conditional DDPM over actions with ``T = 5`` steps and the VP schedule
``beta_i = 1 - exp(-b_min / T - (b_max - b_min) (2i - 1) / (2 T^2))``, ``b_min = 0.1``, ``b_max = 10``,
``alpha_i = 1 - beta_i``, ``abar_i = prod_{j <= i} alpha_j`` (index ``i = 1..T`` in the paper, ``t = i - 1`` in code).
The network predicts the noise, ``eps_theta(x_t, t; s)`` = MLP on ``concat[x_t, temb(t), s]`` with
``temb = Linear(32, 16)(Mish(Linear(16, 32)(SinusoidalPosEmb_16(t))))``, three Linear(256) + Mish layers and a
Linear(256, act_dim) head (``nn.Linear`` default initialisation everywhere).

- Sampling (``p_sample_loop`` with ``clip_denoised``): ``x_T ~ N(0, I)``; for ``t = T-1 .. 0``
  ``x0_hat = clamp(x_t / sqrt(abar_t) - sqrt(1 / abar_t - 1) eps_theta(x_t, t; s), -1, 1)``,
  ``x_{t-1} = mu_t(x0_hat, x_t) + 1[t > 0] sigma_t z`` with the posterior of ``q(x_{t-1} | x_t, x_0)``:
  ``mu_t = beta_t sqrt(abar_{t-1}) / (1 - abar_t) x0 + (1 - abar_{t-1}) sqrt(alpha_t) / (1 - abar_t) x_t``,
  ``sigma_t^2 = beta_t (1 - abar_{t-1}) / (1 - abar_t)``; the final sample is clamped to [-1, 1].
- BC loss (``p_losses``, L2): ``L_bc = E ||eps - eps_theta(sqrt(abar_t) a + sqrt(1 - abar_t) eps, t; s)||^2``,
  ``t ~ U{0..T-1}``, mean over batch and action dimensions.

Each step, in the official order (``Diffusion_QL.train``):

1. critic: ``a' = pi_ema(s')`` (full 5-step chain of the EMA actor; 10 samples per ``s'`` with the max-Q backup),
   ``y = r + gamma (1 - d) min_i max_k Q'_i(s', a'_k)``,
   ``L_Q = mean (Q_1(s, a) - y)^2 + mean (Q_2(s, a) - y)^2``; gradient-norm clip ``gn``; Adam (lr 3e-4 hard-coded).
2. actor: ``a_new = pi_theta(s)`` through the whole reverse chain WITH gradient (back-propagation through all T
   steps), ``L_pi = L_bc + eta * (-Q_i(s, a_new).mean() / |Q_j(s, a_new)|.mean())``, head ``i`` drawn by a fair coin
   each step, normaliser detached, Q from the critic just updated; gradient-norm clip ``gn``; Adam (per-task lr).
3. EMA actor ``theta_ema <- 0.995 theta_ema + 0.005 theta`` when ``step % 5 == 0`` and ``step >= 1000`` (before that the
   EMA copy keeps the initial weights); Polyak ``Q' <- 0.995 Q' + 0.005 Q`` every step.

``--lr_decay`` (used by the README's reproduction commands): ``CosineAnnealingLR(T_max=num_epochs)`` on both optimisers,
stepped once per ``agent.train`` call, i.e. every ``eval_freq * 1000 = 50k`` gradient steps; over 2000 epochs it is stepped
40 times against ``T_max = 2000`` (final LR about 0.999 of the initial one). Reproduced as such (``lr_decay_*``).

Acting (``sample_action``): 50 candidate actions per state from the (non-EMA) actor, one drawn with probabilities
``softmax(min(Q'_1, Q'_2)(s, a_k))`` of the TARGET critic (no temperature).

Everything here carries the leading seed dimension; seeds never share a gradient (losses are per-seed means summed over
seeds, gradient clipping is per seed).
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import Tensor, nn

from agents.base import Agent, AgentConfig, Batch, SeedStreams
from agents.nets import (SeedLinear, SeedMLP, adam, clip_grad_norm_per_seed_, cosine_annealing, init_seed_linear_, mish,
                         polyak_, sinusoidal_embedding, torch_default)
from agents.qlearning import act_by_q, coin, dql_critic, ema_, ema_due, normalised_q_loss, sampled_td_target


@dataclasses.dataclass
class DQLConfig(AgentConfig):
    actor_lr: float  # main.py per-task 'lr': 3e-4 (1e-3 on antmaze-medium-play)
    critic_lr: float  # ql_diffusion.py: Adam(critic.parameters(), lr=3e-4), hard-coded
    discount: float  # --discount 0.99
    tau: float  # --tau 0.005, Polyak rate of the target critic (every step)
    eta: float  # main.py per-task 'eta', weight of the normalised Q term
    n_timesteps: int  # --T 5 diffusion steps (VP schedule, --beta_schedule vp)
    hidden_dim: int  # 256: width of the epsilon network (model.py) and of the critic (Critic)
    time_embed_dim: int  # model.py t_dim = 16
    max_q_backup: bool  # main.py per-task 'max_q_backup' (True on most AntMaze tasks)
    max_q_samples: int  # 10 next actions per s' for the max-Q backup (repeat_interleave(..., 10))
    grad_norm: float  # main.py per-task 'gn': clip_grad_norm_ of actor and critic; <= 0 disables
    ema_decay: float  # ema_decay = 0.995
    ema_start: int  # step_start_ema = 1000
    ema_every: int  # update_ema_every = 5
    lr_decay: bool  # --lr_decay (README's commands pass it): cosine on actor and critic LR
    lr_decay_every: int  # gradient steps per scheduler step: eval_freq (50) x num_steps_per_epoch (1000)
    lr_decay_t_max: int  # CosineAnnealingLR T_max = lr_maxt = num_epochs
    num_candidates: int  # sample_action: state repeated 50 times


# --------------------------------------------------------------------------------------------
# DDPM with the VP schedule (agents/diffusion.py, agents/helpers.py)


def vp_beta_schedule(timesteps: int, b_min: float = 0.1, b_max: float = 10.0) -> Tensor:
    """``beta_i = 1 - exp(-b_min / T - (b_max - b_min) (2i - 1) / (2 T^2))``, ``i = 1..T`` (helpers.py)."""
    i = torch.arange(1, timesteps + 1, dtype=torch.float64)
    alpha = torch.exp(-b_min / timesteps - 0.5 * (b_max - b_min) * (2 * i - 1) / timesteps**2)
    return (1.0 - alpha).float()


class DDPMSchedule(nn.Module):
    """The constants of the forward process and of the posterior ``q(x_{t-1} | x_t, x_0)``, indexed by ``t = 0..T-1``."""

    def __init__(self, betas: Tensor):
        super().__init__()
        betas = betas.double()
        alphas = 1.0 - betas
        abar = torch.cumprod(alphas, 0)
        abar_prev = torch.cat([torch.ones(1, dtype=abar.dtype), abar[:-1]])
        posterior_variance = betas * (1.0 - abar_prev) / (1.0 - abar)
        constants = {
            "betas": betas,
            "alphas_cumprod": abar,
            "alphas_cumprod_prev": abar_prev,
            "sqrt_alphas_cumprod": abar.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - abar).sqrt(),
            "sqrt_recip_alphas_cumprod": (1.0 / abar).sqrt(),
            "sqrt_recipm1_alphas_cumprod": (1.0 / abar - 1.0).sqrt(),
            "posterior_variance": posterior_variance,
            # the variance is 0 at t = 0, where no noise is added anyway
            "posterior_log_variance_clipped": posterior_variance.clamp(min=1e-20).log(),
            "posterior_mean_coef1": betas * abar_prev.sqrt() / (1.0 - abar),
            "posterior_mean_coef2": (1.0 - abar_prev) * alphas.sqrt() / (1.0 - abar),
        }
        for name, value in constants.items():
            self.register_buffer(name, value.float(), persistent=False)
        self.n_timesteps = len(betas)

    @staticmethod
    def _at(constant: Tensor, t: Tensor | int) -> Tensor:
        """``constant[t]`` broadcastable against ``[..., act_dim]`` (``t`` an index tensor ``[...]`` or an int)."""
        return constant[t] if isinstance(t, int) else constant[t].unsqueeze(-1)

    def q_sample(self, x_start: Tensor, t: Tensor | int, noise: Tensor) -> Tensor:
        """``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps``."""
        return self._at(self.sqrt_alphas_cumprod, t) * x_start + self._at(self.sqrt_one_minus_alphas_cumprod, t) * noise

    def predict_start_from_noise(self, x_t: Tensor, t: Tensor | int, noise: Tensor) -> Tensor:
        """``x0_hat = x_t / sqrt(abar_t) - sqrt(1 / abar_t - 1) eps``."""
        return self._at(self.sqrt_recip_alphas_cumprod, t) * x_t - self._at(self.sqrt_recipm1_alphas_cumprod, t) * noise

    def q_posterior(self, x_start: Tensor, x_t: Tensor, t: Tensor | int) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and clipped log-variance of ``q(x_{t-1} | x_t, x_0)``."""
        mean = self._at(self.posterior_mean_coef1, t) * x_start + self._at(self.posterior_mean_coef2, t) * x_t
        return mean, self._at(self.posterior_variance, t), self._at(self.posterior_log_variance_clipped, t)


class EpsilonNet(nn.Module):
    """DQL's ``MLP`` (model.py): ``eps_theta(x_t, t; s)`` on ``concat[x_t, temb(t), s]``, per seed."""

    def __init__(self, n_seeds: int, obs_dim: int, act_dim: int, hidden: int, t_dim: int):
        super().__init__()
        self.t_dim = t_dim
        self.time_in = SeedLinear(n_seeds, t_dim, 2 * t_dim)
        self.time_out = SeedLinear(n_seeds, 2 * t_dim, t_dim)
        self.body = SeedMLP(n_seeds, (act_dim + t_dim + obs_dim, hidden, hidden, hidden, act_dim), mish)

    def init_(self, streams: SeedStreams) -> EpsilonNet:
        for layer in (self.time_in, self.time_out):
            init_seed_linear_(layer, streams, torch_default, bias="torch_default")
        self.body.init_(streams, torch_default, bias="torch_default")
        return self

    def forward(self, x: Tensor, t: Tensor, state: Tensor) -> Tensor:
        temb = self.time_out(mish(self.time_in(sinusoidal_embedding(t, self.t_dim))))
        return self.body(torch.cat([x, temb, state], dim=-1))


class DiffusionPolicy(nn.Module):
    """DQL's ``Diffusion``: epsilon-prediction DDPM, clipped denoising, actions in [-1, 1] (max_action = 1)."""

    def __init__(self, n_seeds: int, obs_dim: int, act_dim: int, config: DQLConfig):
        super().__init__()
        self.act_dim = act_dim
        self.model = EpsilonNet(n_seeds, obs_dim, act_dim, config.hidden_dim, config.time_embed_dim)
        self.schedule = DDPMSchedule(vp_beta_schedule(config.n_timesteps))

    def init_(self, streams: SeedStreams) -> DiffusionPolicy:
        self.model.init_(streams)
        return self

    def bc_loss(self, states: Tensor, actions: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Per-seed ``mean ||eps - eps_theta(q_sample(a, t, eps), t; s)||^2`` (``p_losses``), ``[n_seeds]``."""
        x_noisy = self.schedule.q_sample(actions, t, noise)
        return (self.model(x_noisy, t, states) - noise).square().flatten(1).mean(1)

    def p_sample(self, x: Tensor, t: int, states: Tensor, streams: SeedStreams) -> Tensor:
        """One reverse step ``x_t -> x_{t-1}``, the predicted ``x_0`` clamped to [-1, 1]."""
        steps = torch.full(x.shape[:-1], t, dtype=torch.long, device=x.device)
        x_recon = self.schedule.predict_start_from_noise(x, t, self.model(x, steps, states)).clamp(-1.0, 1.0)
        mean, _, log_variance = self.schedule.q_posterior(x_recon, x, t)
        if t == 0:  # nonzero_mask: no noise at the last step
            return mean
        return mean + (0.5 * log_variance).exp() * streams.randn(*x.shape[1:])

    def sample(self, states: Tensor, streams: SeedStreams) -> Tensor:
        """Actions ``[n_seeds, ..., act_dim]`` for ``states`` ``[n_seeds, ..., obs_dim]``: the full reverse chain from
        ``x_T ~ N(0, I)``, final sample clamped to [-1, 1]. Differentiable (BPTT) unless called under ``no_grad``."""
        x = streams.randn(*states.shape[1:-1], self.act_dim)
        for t in reversed(range(self.schedule.n_timesteps)):
            x = self.p_sample(x, t, states, streams)
        return x.clamp(-1.0, 1.0)


def critic_loss(critic: nn.Module, states: Tensor, actions: Tensor, target: Tensor) -> Tensor:
    """Per-seed ``mean (Q_1(s, a) - y)^2 + mean (Q_2(s, a) - y)^2`` (two ``F.mse_loss``), ``[n_seeds]``."""
    q1, q2 = critic(states, actions)
    return (q1 - target).square().mean(-1) + (q2 - target).square().mean(-1)


def official_lr_decay(every: int, t_max: int):
    """LR multiplier after ``n`` gradient steps: ``CosineAnnealingLR(T_max=t_max, eta_min=0)`` stepped once per
    ``every`` steps (main.py / ql_diffusion.py ``--lr_decay``): ``0.5 (1 + cos(pi floor(n / every) / t_max))``."""
    return lambda n: cosine_annealing(n // every, t_max)


class DQL(Agent):
    name = "dql"
    Config = DQLConfig
    config: DQLConfig

    def __init__(self, obs_dim: int, act_dim: int, config: DQLConfig, seeds, device):
        super().__init__(obs_dim, act_dim, config, seeds, device)
        init = SeedStreams(self.seeds, "dql/init", "cpu")
        n = self.n_seeds
        self.actor = DiffusionPolicy(n, obs_dim, act_dim, config).init_(init).to(self.device)
        self.critic = dql_critic(n, obs_dim, act_dim, init, hidden=config.hidden_dim).to(self.device)
        self.ema_actor = copy.deepcopy(self.actor).requires_grad_(False)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = adam(self.actor.parameters(), lr=config.actor_lr)
        self.critic_opt = adam(self.critic.parameters(), lr=config.critic_lr)
        decay = official_lr_decay(config.lr_decay_every, config.lr_decay_t_max) if config.lr_decay else lambda n: 1.0
        self.actor_schedule = torch.optim.lr_scheduler.LambdaLR(self.actor_opt, decay)
        self.critic_schedule = torch.optim.lr_scheduler.LambdaLR(self.critic_opt, decay)
        self.noise = SeedStreams(self.seeds, "dql/noise", self.device)  # training: t, eps, chains, coin
        self.acting = SeedStreams(self.seeds, "dql/act", self.device)  # evaluation: candidates and the choice

    def control_key(self) -> tuple[bool]:
        return (ema_due(self.step, self.config.ema_start, self.config.ema_every),)

    def learn(self, batch: Batch) -> dict[str, Tensor]:
        cfg = self.config
        obs, actions = batch.observations, batch.actions

        # Q training: the next action from the EMA actor (10 samples per s' with the max-Q backup)
        target = sampled_td_target(self.target_critic, batch, lambda s: self.ema_actor.sample(s, self.noise),
                                   cfg.discount, cfg.max_q_backup, cfg.max_q_samples)
        q_loss_critic = critic_loss(self.critic, obs, actions, target)
        self.critic_opt.zero_grad(set_to_none=True)
        q_loss_critic.sum().backward()
        critic_norm = clip_grad_norm_per_seed_(self.critic.parameters(), cfg.grad_norm)
        self.critic_opt.step()

        # policy training: BC + eta * normalised Q of a chain sampled with gradient, on the updated critic
        t = self.noise.randint(cfg.n_timesteps, obs.shape[1])
        eps = self.noise.randn(obs.shape[1], self.act_dim)
        bc = self.actor.bc_loss(obs, actions, t, eps)
        new_actions = self.actor.sample(obs, self.noise)
        q_term = normalised_q_loss(self.critic, obs, new_actions, coin(self.noise))
        actor_loss = bc + cfg.eta * q_term
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.sum().backward(inputs=list(self.actor.parameters()))  # the critic's gradient is not touched
        actor_norm = clip_grad_norm_per_seed_(self.actor.parameters(), cfg.grad_norm)
        self.actor_opt.step()  # then both LR schedules step (Agent.advance)

        # target networks
        if ema_due(self.step, cfg.ema_start, cfg.ema_every):
            ema_(self.ema_actor, self.actor, cfg.ema_decay)
        polyak_(self.target_critic, self.critic, cfg.tau)
        return {
            "critic_loss": q_loss_critic.detach(),
            "actor_loss": actor_loss.detach(),
            "bc_loss": bc.detach(),
            "ql_loss": q_term.detach(),
            "target_q": target.mean(-1),
            "critic_grad_norm": critic_norm,
            "actor_grad_norm": actor_norm,
        }

    @torch.no_grad()
    def act(self, observations: Tensor) -> Tensor:
        """``sample_action``: ``num_candidates`` full-chain samples per state, one drawn by softmax(min Q')."""
        return act_by_q(observations, self.config.num_candidates, lambda s: self.actor.sample(s, self.acting),
                        self.target_critic, self.acting)
