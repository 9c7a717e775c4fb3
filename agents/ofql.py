"""OFQL: One-Step Flow Q-Learning (Nguyen & Yoo, ICLR 2026, arXiv 2508.13904).

There is no official code. This file follows the paper (equation numbers from the ICLR camera-ready)
and, where the paper says it "builds directly on DQL ... inheriting its training and inference
procedures" and "other hyperparameters remain consistent with DQL", the DQL code it inherits:
Zhendong-Wang/Diffusion-Policies-for-Offline-RL ``agents/ql_diffusion.py``, ``agents/model.py``,
``agents/helpers.py``, ``main.py`` (the shared pieces are in :mod:`agents.qlearning`). Choices the
paper leaves open are marked [open] below, with what was chosen.

Policy: an average-velocity ("MeanFlow") network ``u_theta(a_t, r, t; s)``.

- Path (Eq. 8), t = 0 data, t = 1 noise: ``a_t = (1 - t) a + t eps``, ``eps ~ N(0, I)``,
  conditional velocity ``v = eps - a``.
- BC loss (Eqs. 13-15): ``L_FBC = E || u_theta(a_t, r, t; s) - sg(u_tgt) ||^2`` with
  ``u_tgt = v - (t - r) (v . d_a u_theta + d_t u_theta)``; the total derivative is one
  Jacobian-vector product of ``u_theta`` over ``(a_t, r, t)`` with tangent ``(v, 0, 1)``, state
  fixed (Appendix O), carried through the MLP by the chain rule alongside its forward pass (equal to
  ``torch.func.jvp``, tested, at about half its cost on the CPU); ``sg`` = stop-gradient, so no
  higher-order gradient.
  With ``r = t`` the target is ``v``: plain conditional flow matching (Eq. 9).
  [open] reduction: the mean over batch and action dimensions, DQL's ``WeightedL2``
  (``F.mse_loss``) for its Eq. 4, which the paper writes with the same ``||.||^2``.
  [open] weighting: none by default, as the paper writes it; MeanFlow's code weights each sample's
  squared error ``d`` by ``sg(1 / (d + c)^p)`` (Gsunshine/meanflow p = 1, c = 0.01 on the sum over
  dims; haidog-yaqub/MeanFlow p = 0.5, c = 1e-3 on the mean), here ``bc_adaptive_power`` p and
  ``bc_adaptive_eps`` c on the per-sample mean over action dims (p = 0: the plain loss).
- (t, r) (Appendix B): two draws from logit-normal(-0.4, 1.0), ``t = max``, ``r = min``; then
  ``r = t`` on exactly ``floor(flow_ratio * B)`` randomly chosen samples (flow ratio 0.5).
  [open] pairing: the MeanFlow reference convention (haidog-yaqub/MeanFlow ``sample_t_r``).
- One-step action (Eqs. 12, 16): ``a = eps - u_theta(eps, r = 0, t = 1; s)``, one network call,
  differentiable in theta (no backpropagation through time); [open] clipped to the action box
  [-1, 1] (the paper's output is unbounded; DQL clamps its samples to +-max_action).
- Network (Appendix B): DQL's ``MLP`` with Mish: concat(a_t, emb(t), emb(r), s) -> 3 x 256 Mish ->
  linear to act_dim, where ``emb`` is DQL's time MLP (sinusoidal(64) -> Linear(64, 128) -> Mish ->
  Linear(128, 64)) at the paper's time-embedding size 64. [open] t and r get separate embedding
  MLPs (as MeanFlow's ``t_embedder``/``r_embedder``), and the sinusoid is DQL's
  ``SinusoidalPosEmb`` applied to t in [0, 1] as is (``time_embed_scale = 1``, as official MeanFlow's
  DiT; a community port, haidog-yaqub/MeanFlow, multiplies by 1000 first). All layers ``nn.Linear``'s default init, as DQL.

Critic and actor (Eq. 17, Algorithm 1), in DQL's order per step:

1. critic: ``L = sum_i E (r + gamma (1 - d) min_i Q'_i(s', a') - Q_i(s, a))^2`` with ``a'`` the
   one-step action of the EMA policy; on AntMaze DQL's max-Q backup (10 samples of ``a'``, max per
   head, then min over heads);
2. actor: ``L_FBC + eta * (-Q_i(s, a_theta).mean() / |Q_j(s, a_theta)|.mean())`` with the updated
   critic, ``a_theta`` the one-step action and ``(i, j)`` drawn by a fair coin per step ([open] the
   paper writes ``alpha = eta / E|Q|``; DQL's random-head form inherited); the gradient reaches
   theta through ``dQ/da`` and the one-step action, and the critic's own gradients are not touched;
3. EMA policy ``theta' <- 0.995 theta' + 0.005 theta`` every 5 steps from step 1000, critic target
   Polyak 0.005 every step ([open] the paper's rho, K; DQL's values).

Adam 3e-4 for both (paper). Gradient clipping: the paper does not mention it, but says "other
hyperparameters remain consistent with DQL", whose code clips both networks' gradient norms per
task (``gn``); ``max_grad_norm`` carries DQL's per-task value (<= 0 switches it off), clipped per
seed. No LR decay (DQL's ``--lr_decay`` steps once per 50k steps and is almost a no-op).

Inference (``act``), [open] DQL's ``sample_action`` inherited: 50 one-step candidates per state
from the online policy, one chosen with probabilities ``softmax(min_i Q'_i(s, a_k))`` over the
target critic. The paper also says it follows CleanDiffuser's evaluation "including the same
sampling procedure", whose DQL pipeline samples from the EMA policy (``use_ema``), scales the
initial noise (``temperature`` 0.5) and sharpens the softmax (``weight_temperature``, per task);
``act_with_ema``, ``act_noise_scale`` and ``act_q_temperature`` select that procedure.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import Tensor, nn

from agents.base import Agent, AgentConfig, Batch, SeedStreams
from agents.nets import (SeedMLP, TwinQ, adam, clip_grad_norm_per_seed_, mish, polyak_, sinusoidal_embedding,
                         sinusoidal_embedding_derivative, torch_default)
from agents.qlearning import act_by_q, coin, dql_critic, ema_, ema_due, normalised_q_loss, sampled_td_target


@dataclasses.dataclass
class OFQLConfig(AgentConfig):
    actor_lr: float  # Adam lr of u_theta, 3e-4 (paper App. B)
    critic_lr: float  # Adam lr of the double Q, 3e-4 (paper App. B; DQL hard-codes 3e-4)
    discount: float  # gamma, 0.99 (DQL)
    tau: float  # critic-target Polyak rate every step, 0.005 (DQL)
    eta: float  # Q-term weight; paper grid {0.001, 0.01, 0.1, 0.3, 0.5}, per-task values unpublished
    hidden_dim: int  # width of the 3 hidden Mish layers of u_theta and of each Q, 256
    time_embed_dim: int  # size of the sinusoidal embeddings of t and of r, 64 (paper App. B; DQL 16)
    time_embed_scale: float  # t, r multiplied by this before the sinusoid; 1.0 (DQL's embedding) [open]
    time_mu: float  # logit-normal location of t, r: -0.4 (paper App. B)
    time_sigma: float  # logit-normal scale: 1.0
    flow_ratio: float  # fraction of the batch with r = t: 0.5 (paper App. B)
    bc_adaptive_power: float  # p of MeanFlow's adaptive weight sg(1 / (d + c)^p); 0 = plain loss (paper) [open]
    bc_adaptive_eps: float  # c of the adaptive weight [open]
    ema_decay: float  # EMA policy decay, 0.995 (DQL) [open]
    ema_start: int  # EMA updates begin at this step, 1000 (DQL step_start_ema) [open]
    ema_every: int  # EMA update every this many steps, 5 (DQL update_ema_every) [open]
    max_q_backup: bool  # DQL's max-Q backup (AntMaze)
    max_q_samples: int  # next actions per s' in the max-Q backup, 10 (DQL)
    max_grad_norm: float  # per-seed gradient-norm clip of actor and critic; DQL's per-task gn, <= 0 off
    num_candidates: int  # actions sampled per state at inference, 50 (DQL sample_action) [open]
    act_with_ema: bool  # inference from the EMA policy (CleanDiffuser) instead of the online one (DQL)
    act_noise_scale: float  # eps ~ N(0, scale^2 I) at inference: DQL 1; CleanDiffuser temperature 0.5 [open]
    act_q_temperature: float  # candidates drawn by softmax(this * min Q'): DQL 1; CleanDiffuser weight_temperature [open]


class MeanFlowPolicy(nn.Module):
    """``u_theta(a_t, r, t; s)``: DQL's MLP with embeddings of both times, per seed."""

    def __init__(self, n_seeds: int, obs_dim: int, act_dim: int, hidden: int, time_dim: int, time_scale: float):
        super().__init__()
        self.time_dim = time_dim
        self.time_scale = time_scale
        # DQL model.py time_mlp: SinusoidalPosEmb(d) -> Linear(d, 2d) -> Mish -> Linear(2d, d)
        self.t_mlp = SeedMLP(n_seeds, (time_dim, 2 * time_dim, time_dim), mish)
        self.r_mlp = SeedMLP(n_seeds, (time_dim, 2 * time_dim, time_dim), mish)
        # DQL model.py mid_layer (3 x Linear + Mish) and final_layer
        self.body = SeedMLP(n_seeds, (act_dim + 2 * time_dim + obs_dim, hidden, hidden, hidden, act_dim), mish)

    def init_(self, streams: SeedStreams) -> MeanFlowPolicy:
        for mlp in (self.t_mlp, self.r_mlp, self.body):
            mlp.init_(streams, torch_default, bias="torch_default")
        return self

    def forward(self, a_t: Tensor, r: Tensor, t: Tensor, observations: Tensor) -> Tensor:
        """``a_t [S, ..., A]``, ``r, t [S, ...]``, ``observations [S, ..., obs_dim]`` -> ``[S, ..., A]``.

        ``r`` and ``t`` may also have size 1 in the batch dimensions (one time for every sample, as in the one-step
        action): their embeddings are then computed once and broadcast.
        """
        lead = a_t.shape[:-1]
        t_emb = self.t_mlp(sinusoidal_embedding(t * self.time_scale, self.time_dim)).expand(*lead, -1)
        r_emb = self.r_mlp(sinusoidal_embedding(r * self.time_scale, self.time_dim)).expand(*lead, -1)
        return self.body(torch.cat([a_t, t_emb, r_emb, observations], dim=-1))

    def forward_and_time_derivative(self, a_t: Tensor, r: Tensor, t: Tensor, observations: Tensor,
                                    v: Tensor) -> tuple[Tensor, Tensor]:
        """``(u_theta(a_t, r, t; s), du/dt)`` with ``du/dt = v . d_a u + d_t u``, the Jacobian-vector product along
        ``(a_t, r, t) -> (v, 0, 1)`` (Eq. 15; the state is fixed, Appendix O).

        Forward-mode differentiation by the chain rule (:meth:`SeedMLP.forward_with_tangent`): the tangent of
        the network input is ``[v, d t_emb / dt, 0, 0]``. ``u`` keeps its graph to theta; ``du/dt`` has none.
        """
        scaled_t = t * self.time_scale
        t_emb, t_emb_dt = self.t_mlp.forward_with_tangent(
            sinusoidal_embedding(scaled_t, self.time_dim),
            self.time_scale * sinusoidal_embedding_derivative(scaled_t, self.time_dim))
        r_emb = self.r_mlp(sinusoidal_embedding(r * self.time_scale, self.time_dim))
        with torch.no_grad():
            tangent = torch.cat([v, t_emb_dt, torch.zeros_like(r_emb), torch.zeros_like(observations)], dim=-1)
        return self.body.forward_with_tangent(torch.cat([a_t, t_emb, r_emb, observations], dim=-1), tangent)


def sample_time_pairs(streams: SeedStreams, batch_size: int, mu: float, sigma: float,
                      flow_ratio: float) -> tuple[Tensor, Tensor]:
    """``(r, t)``, each ``[n_seeds, B]``: two logit-normal(mu, sigma) draws, ``t = max``, ``r = min``,
    and ``r = t`` on exactly ``floor(flow_ratio * B)`` samples chosen by a random permutation."""
    draws = torch.sigmoid(streams.randn(batch_size, 2) * sigma + mu)
    t, r = draws.max(dim=-1).values, draws.min(dim=-1).values
    n_equal = int(flow_ratio * batch_size)
    ranks = streams.rand(batch_size).argsort(dim=-1).argsort(dim=-1)  # a random permutation per seed
    return torch.where(ranks < n_equal, t, r), t


def meanflow_target(policy: MeanFlowPolicy, observations: Tensor, a_t: Tensor, r: Tensor, t: Tensor,
                    v: Tensor) -> tuple[Tensor, Tensor]:
    """``(u_theta(a_t, r, t; s), sg(u_tgt))`` with ``u_tgt = v - (t - r) du/dt`` (Eq. 15).

    ``du/dt = v . d_a u + d_t u`` is one JVP over ``(a_t, r, t)`` with tangent ``(v, 0, 1)``
    (:meth:`MeanFlowPolicy.forward_and_time_derivative`); the returned ``u`` keeps its graph to theta,
    the target is detached.
    """
    u, dudt = policy.forward_and_time_derivative(a_t, r, t, observations, v)
    u_tgt = v - (t - r).unsqueeze(-1) * dudt
    return u, u_tgt.detach()


def flow_bc_loss(policy: MeanFlowPolicy, observations: Tensor, actions: Tensor, noise: Tensor, r: Tensor,
                 t: Tensor, adaptive_power: float = 0.0, adaptive_eps: float = 0.0) -> Tensor:
    """Per-seed ``L_FBC`` (Eq. 14): the batch mean of ``w d`` with ``d`` each sample's mean over action dims of
    ``(u - sg(u_tgt))^2`` and ``w = sg(1 / (d + adaptive_eps)^adaptive_power)`` (1 for power 0)."""
    t_ = t.unsqueeze(-1)
    a_t = (1.0 - t_) * actions + t_ * noise
    v = noise - actions
    u, u_tgt = meanflow_target(policy, observations, a_t, r, t, v)
    error = (u - u_tgt).square().mean(-1)
    if adaptive_power:
        error = error / (error.detach() + adaptive_eps).pow(adaptive_power)
    return error.mean(-1)


def one_step_action(policy: MeanFlowPolicy, observations: Tensor, noise: Tensor) -> Tensor:
    """``a = eps - u_theta(eps, r = 0, t = 1; s)`` (Eq. 16), clipped to [-1, 1]; one network call (the embeddings of
    r = 0 and t = 1 computed once per seed)."""
    times = (noise.shape[0], *[1] * (noise.dim() - 2))
    u = policy(noise, noise.new_zeros(times), noise.new_ones(times), observations)
    return (noise - u).clamp(-1.0, 1.0)


class OFQL(Agent):
    name = "ofql"
    Config = OFQLConfig
    config: OFQLConfig

    def __init__(self, obs_dim: int, act_dim: int, config: OFQLConfig, seeds, device):
        super().__init__(obs_dim, act_dim, config, seeds, device)
        init = SeedStreams(self.seeds, "ofql/init", "cpu")
        n, hidden = self.n_seeds, config.hidden_dim
        self.actor = MeanFlowPolicy(n, obs_dim, act_dim, hidden, config.time_embed_dim, config.time_embed_scale)
        self.actor = self.actor.init_(init).to(self.device)
        self.critic: TwinQ = dql_critic(n, obs_dim, act_dim, init, hidden=hidden).to(self.device)
        # DQL: ema_model = deepcopy(actor), critic_target = deepcopy(critic)
        self.ema_actor = copy.deepcopy(self.actor).requires_grad_(False)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = adam(self.actor.parameters(), lr=config.actor_lr)
        self.critic_opt = adam(self.critic.parameters(), lr=config.critic_lr)
        self.noise = SeedStreams(self.seeds, "ofql/noise", self.device)
        self.act_noise = SeedStreams(self.seeds, "ofql/act", self.device)

    def _one_step(self, policy: MeanFlowPolicy, observations: Tensor, streams: SeedStreams,
                  noise_scale: float = 1.0) -> Tensor:
        """One-step actions for ``observations`` ``[n_seeds, ..., obs_dim]``, ``eps ~ N(0, noise_scale^2 I)``
        from ``streams`` (scale 1, training's and DQL's, adds no operation)."""
        noise = streams.randn(*observations.shape[1:-1], self.act_dim)
        return one_step_action(policy, observations, noise if noise_scale == 1.0 else noise_scale * noise)

    def control_key(self) -> tuple[bool]:
        return (ema_due(self.step, self.config.ema_start, self.config.ema_every),)

    def learn(self, batch: Batch) -> dict[str, Tensor]:
        cfg = self.config
        obs, actions = batch.observations, batch.actions
        n_batch = obs.shape[1]

        # 1. critic, target action from the EMA policy in one step (Algorithm 1 lines 4-6)
        target = sampled_td_target(self.target_critic, batch, lambda s: self._one_step(self.ema_actor, s, self.noise),
                                   cfg.discount, cfg.max_q_backup, cfg.max_q_samples)
        q1, q2 = self.critic(obs, actions)
        critic_loss = ((q1 - target).square() + (q2 - target).square()).mean(-1)  # F.mse_loss each, summed
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.sum().backward()
        critic_grad_norm = clip_grad_norm_per_seed_(self.critic.parameters(), cfg.max_grad_norm)
        self.critic_opt.step()

        # 2. actor: L_FBC + eta * normalised Q term on the one-step action (lines 7-8)
        r, t = sample_time_pairs(self.noise, n_batch, cfg.time_mu, cfg.time_sigma, cfg.flow_ratio)
        bc_loss = flow_bc_loss(self.actor, obs, actions, self.noise.randn(n_batch, self.act_dim), r, t,
                               cfg.bc_adaptive_power, cfg.bc_adaptive_eps)
        new_actions = self._one_step(self.actor, obs, self.noise)
        q_loss = normalised_q_loss(self.critic, obs, new_actions, coin(self.noise))
        actor_loss = bc_loss + cfg.eta * q_loss
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.sum().backward(inputs=list(self.actor.parameters()))  # dQ/da flows, the critic's grads untouched
        actor_grad_norm = clip_grad_norm_per_seed_(self.actor.parameters(), cfg.max_grad_norm)
        self.actor_opt.step()

        # 3. targets (DQL order: EMA policy on its schedule, then critic Polyak every step)
        if ema_due(self.step, cfg.ema_start, cfg.ema_every):
            ema_(self.ema_actor, self.actor, cfg.ema_decay)
        polyak_(self.target_critic, self.critic, cfg.tau)
        return {
            "critic_loss": critic_loss.detach(),
            "bc_loss": bc_loss.detach(),
            "q_loss": q_loss.detach(),
            "actor_loss": actor_loss.detach(),
            "q": q1.detach().mean(-1),
            "target_q": target.mean(-1),
            "critic_grad_norm": critic_grad_norm,
            "actor_grad_norm": actor_grad_norm,
        }

    @torch.no_grad()
    def act(self, observations: Tensor) -> Tensor:
        """DQL ``sample_action``: K one-step candidates per state, one drawn by softmax(min Q')."""
        cfg = self.config
        policy = self.ema_actor if cfg.act_with_ema else self.actor
        return act_by_q(observations, cfg.num_candidates,
                        lambda s: self._one_step(policy, s, self.act_noise, cfg.act_noise_scale),
                        self.target_critic, self.act_noise, cfg.act_q_temperature)
