"""CQL: Conservative Q-Learning (Kumar, Zhou, Tucker & Levine, NeurIPS 2020), CQL(H) on a SAC backbone.

Follows the official code, aviralkumar2907/CQL ``d4rl/rlkit/torch/sac/cql.py`` (``CQLTrainer``) with
``d4rl/examples/cql_mujoco_new.py`` / ``cql_antmaze_new.py``, for the structure of the update, and
CORL's re-implementation (tinkoff-ai/CORL ``algorithms/offline/cql.py``, ``configs/offline/cql/*``),
whose -v2 re-runs are the published numbers we compare against, for the default settings.

Networks (per seed): a tanh-Gaussian actor, 3x256 ReLU, ``a = tanh(z)``, ``z ~ N(mu(s), sigma(s))``,
``log sigma`` clamped; twin critics ``Q_1, Q_2`` (3x256 ReLU on ``[s, a]``) with Polyak target copies.
One gradient step, in the official order (``train_from_torch``); every loss is a per-seed mean over the
batch, summed over seeds:

1. entropy temperature (automatic tuning, target entropy ``H = -|A|``), with ``a ~ pi(.|s)``:
   ``L_alpha = -mean[ log_alpha * (log pi(a|s) + H).detach() ]``, one Adam step; the policy loss then
   uses the *updated* ``alpha = exp(log_alpha)`` (official; CORL uses the value before the step).
2. actor: ``L_pi = mean[ alpha log pi(a|s) - min_i Q_i(s, a) ]``, or during the first ``bc_steps`` steps
   the BC warm-up ``mean[ alpha log pi(a|s) - log pi(a_data|s) ]`` (official ``policy_eval_start``).
3. critics, with every policy sample drawn from the policy *as it was before step 2* (the official
   code computes all losses first and steps the optimisers afterwards), actions from ``pi(.|s')``
   without entropy in the target (official ``deterministic_backup=True``, CORL ``backup_entropy=False``):
   ``y = r + gamma (1 - d) min_i Q'_i(s', a')``, ``L_Q = sum_i mean[(Q_i(s, a) - y)^2] + sum_i R_i`` with
   the CQL(H) regulariser (official ``min_q_version=3``, importance-sampled)::

       R_i = w * mean_s clip( T logsumexp_j( X_ij / T ) - Q_i(s, a_data),  clip_min, clip_max )
       X_i = [ Q_i(s, u_k) - log(0.5^|A|)       for 10 u_k ~ U[-1, 1]^|A|,
               Q_i(s, a'_k) - log pi(a'_k|s')   for 10 a'_k ~ pi(.|s')   (s' actions evaluated at s),
               Q_i(s, a_k) - log pi(a_k|s)      for 10 a_k ~ pi(.|s) ]    (30 terms per state)

   (``w`` = ``min_q_weight``, ``T`` = ``cql_temp``, log-probs detached). ``importance_sample = False``
   is CQL(rho) (``min_q_version=2``): the logsumexp runs over the raw ``Q`` of the 30 actions and the
   data action. Lagrange variant (AntMaze): ``alpha' = clamp(exp(log_alpha'), 0, 1e6)`` and
   ``R_i = alpha' w (gap_i - target_action_gap)`` with ``gap_i`` the clipped mean above;
   ``alpha'`` takes one Adam step on ``L_alpha' = -0.5 sum_i alpha' w (gap_i - target_action_gap)``
   (gaps detached; it grows while the gap exceeds its target) and the critics use ``alpha'`` from
   before that step, as the official code does.
4. targets: ``Q'_i <- (1 - tau) Q'_i + tau Q_i`` every step.

Evaluation (``act``) is the deterministic policy ``tanh(mu(s))`` (rlkit ``MakeDeterministic``, CORL's
``actor.act`` in eval mode).

Where the official code and CORL differ, and what this file does (default = CORL, the -v2 numbers):

- policy lr: official 1e-4 (argparse; README "1e-4 or 3e-4"); CORL 3e-5 MuJoCo, 1e-4 AntMaze. Config.
- min-Q weight ``w``: official README 5.0 or 10.0 (MuJoCo, no Lagrange), 5.0 (AntMaze, Lagrange);
  CORL 10.0 MuJoCo, 5.0 AntMaze. Config.
- BC warm-up: official ``policy_eval_start=40000`` — ``_current_epoch`` is incremented before the test
  ``_current_epoch < policy_eval_start``, so it is 39,999 BC steps (``bc_steps = 39999`` here); CORL
  ``bc_steps=0`` (and its ``actor.log_prob`` ignores the data actions, scoring a fresh sample, so its BC
  branch would not be BC). Here BC scores the data actions as the official ``TanhGaussianPolicy.log_prob``
  does: ``z = atanh(a)`` with ``1 +- a`` clamped at 1e-6, the mean clamped to [-9, 9].
- initialisation (``init_scheme``): "corl" = critics orthogonal(sqrt 2) hidden kernels, zero biases,
  orthogonal(1e-2) output (``orthogonal_init=True``); actor PyTorch-default hidden layers (CORL calls
  ``init_module_weights(base_network)`` without ``orthogonal_init``), xavier_uniform(1e-2) output, zero
  bias, and learnable scalars ``log_std = m * raw + o`` (``m = 1``, ``o = -1`` initially).
  "rlkit" = official: ``fanin_init`` hidden kernels (rlkit takes ``size[0]`` of the ``[out, in]``
  weight, so the bound is ``1/sqrt(out_features)``), hidden biases 0.1, outputs U(+-3e-3) (critic) and
  U(+-1e-3) (actor mean and log-std heads), no log-std affine. The official target critics are
  separate randomly initialised networks; here (and in CORL) they start as copies of the critics.
- log-std clamp: official [-5, 2] (``LOG_SIG_MIN/MAX``), CORL [-20, 2]. Config.
- tanh correction: official ``log(1 - tanh(z)^2 + 1e-6)``; here, as CORL's ``TanhTransform``, the
  stable ``2 (log 2 - z - softplus(-2 z))``.
- state normalisation: CORL normalises observations with the dataset's mean and std (+1e-3) on
  MuJoCo (``normalize=True``), not on AntMaze; the official code never does. Config; the statistics
  live in a module (saved in the state dict) and ``act`` applies them to raw observations.
- rewards: official unchanged on MuJoCo, ``(r - 0.5) * 4`` on AntMaze; CORL unchanged on MuJoCo except
  hopper-medium-v2 (``normalize_reward=True``: ``r * 1000 / (max return - min return)``, as IQL), and
  ``10 r - 5`` on AntMaze (``"corl_antmaze"``).
- Q-loss structure: official steps two Adams (``qf1_optimizer``, ``qf2_optimizer``) on separate
  backward passes; CORL one backward of the summed loss through the same two optimisers. The two
  critics share no parameter and Adam is per-element, so one Adam over both critics is identical.
- actor and critic losses are computed at the same parameters in both codes (CORL explicitly; the
  official code runs the policy's backward after the critic steps; with the optimisers of its
  PyTorch (<= 1.4, in-place ``p.data`` updates) that backward mixes the old activations with the updated
  critic weights, an accident newer PyTorch rejects, not reproduced). Here the actor steps first, through critics not yet
  updated, with ``backward(inputs=actor parameters)`` so no stray gradient reaches the critics; every
  sample the critic loss needs is drawn before the actor step.
- Lagrange: official ``alpha' (w gap - tau_off)`` with ``lagrange_thresh`` ``tau_off = 5`` and ``alpha'``
  starting at 1 (``log_alpha' = 0``); CORL ``alpha' w (gap - tau)`` with ``tau = 0.8`` and ``log_alpha' = 1``.
  The form here is CORL's; the official threshold is ``target_action_gap = tau_off / w``
  (and ``log_alpha_prime_init = 0``). CORL also clips ``lse - Q_data`` per state at ``[-200, inf)`` on
  AntMaze (``clip_diff_min``); the official code does not clip.
- max target backup (``target_backup``): "sample" = one ``a' ~ pi(.|s')`` (both codes' MuJoCo default);
  "min_of_max" = official ``max_q_backup`` ``min_i max_k Q'_i(s', a'_k)`` over 10 samples (off in the
  official AntMaze command); "max_of_min" = CORL's ``cql_max_target_backup`` ``max_k min_i Q'_i(s', a'_k)``
  (on for AntMaze in CORL).
- CORL AntMaze critics: ``critic_1`` gets ``q_n_hidden_layers=5`` but ``critic_2`` is built without it
  and keeps 3 hidden layers. The CORL AntMaze numbers came from that pair, so the AntMaze default
  reproduces it (``critic_hidden_dims`` 5x256, ``critic2_hidden_dims`` 3x256); set both equal to fix it.

Randomness is per seed (``SeedStreams``): the Gaussian noise of every policy sample and the uniform
random actions; ``log_alpha`` and ``log_alpha'`` are ``[n_seeds]`` parameters.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Literal
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from agents.base import Agent, AgentConfig, Batch, SeedStreams, Transitions
from agents.nets import SeedLinear, SeedMLP, TwinQ, adam, orthogonal, polyak_, torch_default

LOG_2 = math.log(2.0)
MEAN_CLAMP = 9.0  # rlkit policies.py MEAN_MIN/MEAN_MAX, used by TanhGaussianPolicy.log_prob (BC warm-up)
ATANH_EPS = 1e-6  # rlkit policies.py atanh(): (1 + x) and (1 - x) clamped at 1e-6
STATE_STD_EPS = 1e-3  # CORL compute_mean_std(..., eps=1e-3)


@dataclasses.dataclass
class CQLConfig(AgentConfig):
    policy_lr: float  # actor and entropy-temperature Adam lr: official 1e-4; CORL 3e-5 MuJoCo, 1e-4 AntMaze
    qf_lr: float  # critics and Lagrange alpha' Adam lr: 3e-4 (both)
    actor_hidden_dims: tuple[int, ...]  # (256, 256, 256) (both)
    critic_hidden_dims: tuple[int, ...]  # Q_1: (256,)*3; CORL AntMaze (256,)*5 (q_n_hidden_layers)
    critic2_hidden_dims: tuple[int, ...]  # Q_2: (256,)*3 everywhere in CORL (its critic_2 quirk)
    discount: float  # 0.99
    tau: float  # Polyak rate of the target critics every step, 5e-3
    init_scheme: Literal["corl", "rlkit"]  # "corl" or "rlkit" (official); see the module docstring
    log_std_min: float  # CORL -20, official -5
    log_std_max: float  # 2 (both)
    n_actions: int  # actions per state per CQL group (official num_random, CORL cql_n_actions): 10
    cql_temp: float  # T of the logsumexp: 1.0
    min_q_weight: float  # w (official min_q_weight, CORL cql_alpha): CORL 10 MuJoCo, 5 AntMaze
    importance_sample: bool  # True: CQL(H) min_q_version 3; False: CQL(rho), min_q_version 2
    lagrange: bool  # automatic alpha' (official with_lagrange / CORL cql_lagrange): AntMaze
    target_action_gap: float  # tau of the Lagrange form alpha' w (gap - tau): CORL 0.8 (official 5/w)
    log_alpha_prime_init: float  # CORL Scalar(1.0); official zeros
    clip_diff_min: float  # per-state clip of lse - Q_data: CORL -200 AntMaze, else -inf
    clip_diff_max: float  # inf
    target_backup: Literal["sample", "min_of_max", "max_of_min"]  # "sample", "min_of_max" (official max_q_backup), "max_of_min" (CORL max_target_backup)
    bc_steps: int  # first steps with the BC policy loss: CORL 0; official policy_eval_start 40000 -> 39999
    normalize_states: bool  # CORL normalize: True MuJoCo, False AntMaze; official never


# ---------------------------------------------------------------------------------------------
# The tanh-Gaussian policy


def tanh_gaussian_log_prob(pre_tanh: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """``log pi(tanh(z))`` for ``z ~ N(mean, exp(log_std))``, summed over the last dimension.

    ``log N(z) - log(1 - tanh(z)^2)`` with the stable ``log(1 - tanh(z)^2) = 2 (log 2 - z - softplus(-2 z))``.
    """
    normal = -0.5 * ((pre_tanh - mean) * torch.exp(-log_std)).square() - log_std - 0.5 * math.log(2 * math.pi)
    correction = 2.0 * (LOG_2 - pre_tanh - F.softplus(-2.0 * pre_tanh))
    return (normal - correction).sum(-1)


def sample_tanh_gaussian(mean: Tensor, log_std: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
    """Reparameterised samples ``tanh(mean + std * noise)`` and their log-probs.

    ``mean``, ``log_std`` ``[S, B, A]``; ``noise`` ``[S, B, K, A]`` -> actions ``[S, B, K, A]``, log-probs ``[S, B, K]``.
    """
    mean, log_std = mean.unsqueeze(2), log_std.unsqueeze(2)
    pre_tanh = mean + torch.exp(log_std) * noise
    return torch.tanh(pre_tanh), tanh_gaussian_log_prob(pre_tanh, mean, log_std)


def atanh_clipped(actions: Tensor) -> Tensor:
    """rlkit ``atanh``: ``0.5 log((1 + a) / (1 - a))`` with ``1 +- a`` clamped at 1e-6 (finite at a = +-1)."""
    return 0.5 * torch.log((1.0 + actions).clamp(min=ATANH_EPS) / (1.0 - actions).clamp(min=ATANH_EPS))


def bc_log_prob(mean: Tensor, log_std: Tensor, actions: Tensor) -> Tensor:
    """``log pi(a_data|s)`` as rlkit ``TanhGaussianPolicy.log_prob`` (mean clamped to [-9, 9])."""
    return tanh_gaussian_log_prob(atanh_clipped(actions), mean.clamp(-MEAN_CLAMP, MEAN_CLAMP), log_std)


class TanhGaussianActor(nn.Module):
    """``[mu, raw] = MLP(s)``; ``log_std = clamp(m * raw + o)`` (CORL, learnable ``m``, ``o``) or ``clamp(raw)``."""

    def __init__(self, n_seeds: int, obs_dim: int, act_dim: int, hidden_dims: tuple[int, ...], log_std_affine: bool):
        super().__init__()
        self.act_dim = act_dim
        self.trunk = SeedMLP(n_seeds, (obs_dim, *hidden_dims), activate_final=True)
        self.head = SeedLinear(n_seeds, hidden_dims[-1], 2 * act_dim)
        if log_std_affine:  # CORL Scalar(log_std_multiplier=1.0), Scalar(log_std_offset=-1.0)
            self.log_std_multiplier = nn.Parameter(torch.ones(n_seeds, 1, 1))
            self.log_std_offset = nn.Parameter(torch.full((n_seeds, 1, 1), -1.0))
        else:
            self.log_std_multiplier = self.log_std_offset = None

    def forward(self, observations: Tensor, log_std_min: float, log_std_max: float) -> tuple[Tensor, Tensor]:
        """``[S, N, obs_dim]`` -> ``mean``, ``log_std`` (clamped), each ``[S, N, act_dim]``."""
        mean, log_std = self.head(self.trunk(observations)).split(self.act_dim, dim=-1)
        if self.log_std_multiplier is not None:
            log_std = self.log_std_multiplier * log_std + self.log_std_offset
        return mean, log_std.clamp(log_std_min, log_std_max)


# ---------------------------------------------------------------------------------------------
# The losses


def alpha_loss(log_alpha: Tensor, log_pi: Tensor, target_entropy: float) -> Tensor:
    """Per-seed ``-mean[ log_alpha (log pi + H).detach() ]``; ``log_alpha`` ``[S]``, ``log_pi`` ``[S, B]``."""
    return -(log_alpha[:, None] * (log_pi + target_entropy).detach()).mean(-1)


def alpha_loss_gradient(log_pi: Tensor, target_entropy: float) -> Tensor:
    """``d alpha_loss / d log_alpha = -mean[ (log pi + H).detach() ]``, ``[S]`` (the loss is linear in ``log_alpha``)."""
    return -(log_pi + target_entropy).detach().mean(-1)


def cql_logsumexp(q_data: Tensor, q_rand: Tensor, q_next: Tensor, q_curr: Tensor, log_pi_next: Tensor,
                  log_pi_curr: Tensor, act_dim: int, temp: float, importance_sample: bool) -> Tensor:
    """``T logsumexp(X / T)`` per state, ``[S, B]``, over one critic's CQL action set.

    ``q_data`` ``[S, B]`` is ``Q(s, a_data)``; ``q_rand``, ``q_next``, ``q_curr`` ``[S, B, n]`` are ``Q(s, .)`` at
    uniform actions, at actions drawn from ``pi(.|s')`` and at actions drawn from ``pi(.|s)``, whose
    log-probs are ``log_pi_next`` and ``log_pi_curr`` ``[S, B, n]`` (detached).
    Importance-sampled (official ``min_q_version=3``, CORL ``cql_importance_sample``):
    ``X = [Q_rand - log 0.5^|A|, Q_next - log pi(.|s'), Q_curr - log pi(.|s)]`` (3n terms);
    otherwise (``min_q_version=2``, CQL(rho)) ``X = [Q_rand, Q_data, Q_next, Q_curr]`` (3n + 1 terms).
    """
    if importance_sample:
        log_uniform_density = act_dim * math.log(0.5)  # np.log(0.5 ** act_dim)
        cat = torch.cat(
            [q_rand - log_uniform_density, q_next - log_pi_next.detach(), q_curr - log_pi_curr.detach()], dim=-1
        )
    else:
        cat = torch.cat([q_rand, q_data.unsqueeze(-1), q_next, q_curr], dim=-1)
    return torch.logsumexp(cat / temp, dim=-1) * temp


def cql_gap(logsumexp: Tensor, q_data: Tensor, clip_min: float, clip_max: float) -> Tensor:
    """Per-seed ``mean_s clip(logsumexp - Q(s, a_data), clip_min, clip_max)`` (CORL ``cql_qf_diff``), ``[S]``.

    Without clipping this is the official ``logsumexp.mean() - q_pred.mean()``; the regulariser is
    ``min_q_weight`` times it.
    """
    return (logsumexp - q_data).clamp(clip_min, clip_max).mean(-1)


def cql_penalties(gap1: Tensor, gap2: Tensor, weight: float, lagrange: bool, log_alpha_prime: Tensor,
                  target_gap: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The two critics' CQL terms, the Lagrange loss and ``alpha'``, all ``[S]``.

    Fixed weight: ``R_i = w gap_i``, no ``alpha'`` loss. Lagrange: ``alpha' = clamp(exp(log_alpha'), 0, 1e6)``,
    ``R_i = alpha' w (gap_i - target_gap)`` with ``alpha'`` detached (the critics see the value from before
    its step) and ``L_alpha' = -0.5 sum_i alpha' w (gap_i - target_gap)`` with the gaps detached, so that
    minimising it raises ``alpha'`` while the gap exceeds its target and lowers it otherwise.
    """
    if not lagrange:
        zeros = torch.zeros_like(gap1)
        return weight * gap1, weight * gap2, zeros, zeros
    alpha_prime = torch.clamp(torch.exp(log_alpha_prime), min=0.0, max=1e6)
    excess1, excess2 = weight * (gap1 - target_gap), weight * (gap2 - target_gap)
    penalty1, penalty2 = alpha_prime.detach() * excess1, alpha_prime.detach() * excess2
    alpha_prime_loss = -0.5 * alpha_prime * (excess1 + excess2).detach()
    return penalty1, penalty2, alpha_prime_loss, alpha_prime.detach()


def backup_value(q1: Tensor, q2: Tensor, mode: str) -> Tensor:
    """The target critics' value of ``s'`` from their values ``[S, B, K]`` at ``K`` actions ``a'_k ~ pi(.|s')``.

    "sample" (K = 1): ``min_i Q'_i(s', a')``; "min_of_max" (official ``max_q_backup``):
    ``min_i max_k Q'_i(s', a'_k)``; "max_of_min" (CORL ``cql_max_target_backup``): ``max_k min_i Q'_i(s', a'_k)``.
    """
    if mode == "min_of_max":
        return torch.minimum(q1.max(-1).values, q2.max(-1).values)
    return torch.minimum(q1, q2).max(-1).values  # "sample" (K = 1) or "max_of_min"


# ---------------------------------------------------------------------------------------------
# Initialisation (per seed, from the seed's own CPU generator)

Init = Callable[[Tensor, torch.Generator], None]


def uniform_init(bound: float) -> Init:
    def init(tensor: Tensor, generator: torch.Generator) -> None:
        nn.init.uniform_(tensor, -bound, bound, generator=generator)

    return init


def rlkit_fanin(weight: Tensor, generator: torch.Generator) -> None:
    """rlkit ``ptu.fanin_init``: U(+-1/sqrt(size[0])) of the ``[out, in]`` torch weight, i.e. 1/sqrt(out_features).

    (Our kernels are ``[in, out]``, hence ``shape[1]``.)
    """
    uniform_init(1.0 / math.sqrt(weight.shape[1]))(weight, generator)


def xavier_uniform(gain: float) -> Init:
    """``nn.init.xavier_uniform_(w, gain)``: U(+-gain sqrt(6 / (in + out)))."""

    def init(weight: Tensor, generator: torch.Generator) -> None:
        uniform_init(gain * math.sqrt(6.0 / (weight.shape[0] + weight.shape[1])))(weight, generator)

    return init


def constant_init(value: float) -> Init:
    def init(tensor: Tensor, generator: torch.Generator) -> None:
        tensor.fill_(value)

    return init


@torch.no_grad()
def init_linear_(layer: SeedLinear, streams: SeedStreams, weight_init: Init, bias_init: Init) -> None:
    """Each seed's kernel ``[in, out]`` then bias ``[1, out]`` from that seed's generator."""
    for k, generator in enumerate(streams.generators):
        weight = torch.empty(layer.in_features, layer.out_features)
        weight_init(weight, generator)
        bias = torch.empty(1, layer.out_features)
        bias_init(bias, generator)
        layer.weight[k].copy_(weight)
        layer.bias[k].copy_(bias)


def init_networks_(scheme: str, actor: TanhGaussianActor, critic: TwinQ, streams: SeedStreams) -> None:
    """CORL (``orthogonal_init=True``) or rlkit (official) initialisation; see the module docstring."""
    zeros = constant_init(0.0)
    critic_layers = [list(critic.q1.linears), list(critic.q2.linears)]
    if scheme == "corl":
        for layer in actor.trunk.linears:  # nn.Linear default (init_module_weights leaves hidden layers alone)
            init_linear_(layer, streams, torch_default, uniform_init(1.0 / math.sqrt(layer.in_features)))
        init_linear_(actor.head, streams, xavier_uniform(1e-2), zeros)
        for *hidden, last in critic_layers:
            for layer in hidden:
                init_linear_(layer, streams, orthogonal(math.sqrt(2.0)), zeros)
            init_linear_(last, streams, orthogonal(1e-2), zeros)
    elif scheme == "rlkit":
        for layer in actor.trunk.linears:
            init_linear_(layer, streams, rlkit_fanin, constant_init(0.1))  # Mlp hidden_init, b_init_value=0.1
        init_linear_(actor.head, streams, uniform_init(1e-3), uniform_init(1e-3))  # last_fc, last_fc_log_std
        for *hidden, last in critic_layers:
            for layer in hidden:
                init_linear_(layer, streams, rlkit_fanin, constant_init(0.1))
            init_linear_(last, streams, uniform_init(3e-3), uniform_init(3e-3))  # Mlp init_w=3e-3
    else:
        raise ValueError(f"init_scheme must be 'corl' or 'rlkit', got {scheme!r}")


class StateNormalizer(nn.Module):
    """``(s - mean) / std`` with the dataset's statistics (CORL ``compute_mean_std(eps=1e-3)``); identity until fitted."""

    def __init__(self, obs_dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(obs_dim))
        self.register_buffer("std", torch.ones(obs_dim))

    @torch.no_grad()
    def fit_(self, observations: Tensor) -> None:
        self.mean.copy_(observations.mean(0))
        self.std.copy_(observations.std(0, unbiased=False) + STATE_STD_EPS)  # numpy std is the population std

    def forward(self, observations: Tensor) -> Tensor:
        return (observations - self.mean) / self.std


class Temperatures(nn.Module):
    """Per-seed ``log_alpha`` (entropy, starts at 0 in both codes) and ``log_alpha'`` (Lagrange)."""

    def __init__(self, n_seeds: int, log_alpha_prime_init: float):
        super().__init__()
        self.log_alpha = nn.Parameter(torch.zeros(n_seeds))
        self.log_alpha_prime = nn.Parameter(torch.full((n_seeds,), float(log_alpha_prime_init)))


# ---------------------------------------------------------------------------------------------
# The agent


class CQL(Agent):
    name = "cql"
    Config = CQLConfig
    config: CQLConfig

    def __init__(self, obs_dim: int, act_dim: int, config: CQLConfig, seeds, device):
        super().__init__(obs_dim, act_dim, config, seeds, device)
        cfg = config
        n = self.n_seeds
        init = SeedStreams(self.seeds, "cql/init", "cpu")
        self.actor = TanhGaussianActor(n, obs_dim, act_dim, cfg.actor_hidden_dims, cfg.init_scheme == "corl")
        self.critic = TwinQ(n, obs_dim, act_dim, cfg.critic_hidden_dims)
        if tuple(cfg.critic2_hidden_dims) != tuple(cfg.critic_hidden_dims):  # CORL's AntMaze critic_2
            self.critic.q2 = SeedMLP(n, (obs_dim + act_dim, *cfg.critic2_hidden_dims, 1))
        init_networks_(cfg.init_scheme, self.actor, self.critic, init)
        self.actor.to(self.device)
        self.critic.to(self.device)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.temperatures = Temperatures(n, cfg.log_alpha_prime_init).to(self.device)
        self.state_norm = StateNormalizer(obs_dim).to(self.device)
        self.target_entropy = -float(act_dim)  # -np.prod(action_space.shape)

        self.actor_opt = adam(self.actor.parameters(), lr=cfg.policy_lr)
        self.critic_opt = adam(self.critic.parameters(), lr=cfg.qf_lr)  # = qf1/qf2 optimisers (per-element Adam)
        self.alpha_opt = adam([self.temperatures.log_alpha], lr=cfg.policy_lr)  # both codes: policy_lr
        self.alpha_prime_opt = adam([self.temperatures.log_alpha_prime], lr=cfg.qf_lr)  # both codes: qf_lr
        self.noise = SeedStreams(self.seeds, "cql/noise", self.device)

    def preprocess(self, data: Transitions) -> Transitions:
        data = super().preprocess(data)  # rewards; then CORL's state normalisation
        if self.config.normalize_states:
            self.state_norm.fit_(data.observations)
            data = data.replace(
                observations=self.state_norm(data.observations),
                next_observations=self.state_norm(data.next_observations),
            )
        return data

    def control_key(self) -> tuple[bool]:
        return (self.step < self.config.bc_steps,)

    def learn(self, batch: Batch) -> dict[str, Tensor]:
        cfg = self.config
        obs, next_obs, data_actions = batch.observations, batch.next_observations, batch.actions
        n_batch, act_dim, n = obs.shape[1], self.act_dim, cfg.n_actions
        k = 1 if cfg.target_backup == "sample" else n  # actions a' per next state in the target
        log_alpha = self.temperatures.log_alpha

        # pi(.|s) and pi(.|s') once for every sample of this step (repeating a state repeats its mean and std)
        mean, log_std = self.actor(torch.cat([obs, next_obs], dim=1), cfg.log_std_min, cfg.log_std_max)
        mean_s, log_std_s, mean_next, log_std_next = (
            mean[:, :n_batch], log_std[:, :n_batch], mean[:, n_batch:], log_std[:, n_batch:]
        )
        noise_s = self.noise.randn(n_batch, 1 + n, act_dim)  # 1 for the policy loss, n for the CQL term
        noise_next = self.noise.randn(n_batch, k + n, act_dim)  # k for the target, n for the CQL term
        uniform = self.noise.rand(n_batch, n, act_dim) * 2.0 - 1.0

        # 1. entropy temperature; the policy loss uses the updated alpha (official order)
        new_actions, log_pi = sample_tanh_gaussian(mean_s, log_std_s, noise_s[:, :, :1])
        new_actions, log_pi = new_actions[:, :, 0], log_pi[:, :, 0]
        temperature_loss = alpha_loss(log_alpha, log_pi, self.target_entropy)
        # its gradient in closed form, not by a backward pass: this step's actor graph then has one backward pass
        # (the policy loss's), which is what torch.compile's AOTAutograd needs
        log_alpha.grad = alpha_loss_gradient(log_pi, self.target_entropy)
        self.alpha_opt.step()
        alpha = log_alpha.detach().exp()

        # 2. policy loss: BC warm-up, then SAC's through the critics as they are before this step
        if self.step < cfg.bc_steps:
            objective = bc_log_prob(mean_s, log_std_s, data_actions)
        else:
            objective = torch.minimum(*self.critic(obs, new_actions))
        policy_loss = (alpha[:, None] * log_pi - objective).mean(-1)

        # every sample the critic loss needs comes from the policy before its step
        with torch.no_grad():
            mean_s, log_std_s, mean_next, log_std_next = (
                t.detach() for t in (mean_s, log_std_s, mean_next, log_std_next)
            )
            next_actions, _ = sample_tanh_gaussian(mean_next, log_std_next, noise_next[:, :, :k])
            cql_next_actions, cql_next_log_pi = sample_tanh_gaussian(mean_next, log_std_next, noise_next[:, :, k:])
            cql_curr_actions, cql_curr_log_pi = sample_tanh_gaussian(mean_s, log_std_s, noise_s[:, :, 1:])
            target_q1, target_q2 = self.target_critic(next_obs.unsqueeze(2).expand(-1, -1, k, -1), next_actions)
            target_v = backup_value(target_q1, target_q2, cfg.target_backup)
            td_target = batch.rewards + cfg.discount * (1.0 - batch.terminals) * target_v

        self.actor_opt.zero_grad(set_to_none=True)
        policy_loss.sum().backward(inputs=list(self.actor.parameters()))
        self.actor_opt.step()

        # 3. critics: TD + CQL(H), data action and the 3n CQL actions in one pass per head
        actions = torch.cat([data_actions.unsqueeze(2), uniform, cql_next_actions, cql_curr_actions], dim=2)
        q1_all, q2_all = self.critic(obs.unsqueeze(2).expand(-1, -1, 1 + 3 * n, -1), actions)
        gaps, td_losses, q_data = [], [], []
        for q in (q1_all, q2_all):
            q_pred, q_rand, q_next, q_curr = q[..., 0], q[..., 1 : 1 + n], q[..., 1 + n : 1 + 2 * n], q[..., 1 + 2 * n :]
            lse = cql_logsumexp(q_pred, q_rand, q_next, q_curr, cql_next_log_pi, cql_curr_log_pi, act_dim,
                                cfg.cql_temp, cfg.importance_sample)
            gaps.append(cql_gap(lse, q_pred, cfg.clip_diff_min, cfg.clip_diff_max))
            td_losses.append((q_pred - td_target).square().mean(-1))
            q_data.append(q_pred)
        penalty1, penalty2, alpha_prime_loss, alpha_prime = cql_penalties(
            gaps[0], gaps[1], cfg.min_q_weight, cfg.lagrange, self.temperatures.log_alpha_prime, cfg.target_action_gap
        )
        critic_loss = td_losses[0] + td_losses[1] + penalty1 + penalty2
        self.critic_opt.zero_grad(set_to_none=True)
        if cfg.lagrange:  # disjoint parameters: one backward serves both optimisers
            self.alpha_prime_opt.zero_grad(set_to_none=True)
            (critic_loss.sum() + alpha_prime_loss.sum()).backward()
            self.alpha_prime_opt.step()
        else:
            critic_loss.sum().backward()
        self.critic_opt.step()

        # 4. target critics
        polyak_(self.target_critic, self.critic, cfg.tau)
        return {
            "policy_loss": policy_loss.detach(),
            "alpha_loss": temperature_loss.detach(),
            "alpha": alpha,
            "log_pi": log_pi.detach().mean(-1),
            "qf1_loss": td_losses[0].detach(),
            "qf2_loss": td_losses[1].detach(),
            "cql_gap1": gaps[0].detach(),
            "cql_gap2": gaps[1].detach(),
            "cql_penalty": (penalty1 + penalty2).detach(),
            "alpha_prime": alpha_prime,
            "alpha_prime_loss": alpha_prime_loss.detach(),
            "q_data": q_data[0].detach().mean(-1),
            "q_rand": q1_all[..., 1 : 1 + n].detach().mean((-2, -1)),
            "target_q": target_v.mean(-1),
        }

    @torch.no_grad()
    def act(self, observations: Tensor) -> Tensor:
        """The deterministic policy ``tanh(mu(s))`` on raw observations (normalised here when configured)."""
        mean, _ = self.actor(self.state_norm(observations), self.config.log_std_min, self.config.log_std_max)
        return torch.tanh(mean)
