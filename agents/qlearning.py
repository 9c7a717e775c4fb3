"""The Q-learning pieces Diffusion-QL introduced and OFQL and CPQL inherit.

From Zhendong-Wang/Diffusion-Policies-for-Offline-RL ``agents/ql_diffusion.py``:

- a double-Q critic, two 3x256 Mish MLPs on ``[s, a]`` (``Critic``);
- the TD target ``r + gamma (1 - d) min_i Q'_i(s', a')`` with ``a'`` from the target policy, or with
  the max-Q backup ``min_i max_k Q'_i(s', a'_k)`` over 10 sampled ``a'_k`` (AntMaze);
- the policy-improvement term ``-Q_i(s, a_theta).mean() / |Q_j(s, a_theta)|.mean()`` with the head
  ``i`` drawn at random every step and the normaliser detached;
- the EMA target policy (decay 0.995, every 5 steps from step 1000; ``helpers.py EMA``);
- action selection among candidates by ``multinomial(softmax(min_i Q'_i(s, a_k)))``.

Every function is per seed: inputs carry the leading seed dimension and random draws come from
per-seed streams.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from agents.base import Batch, SeedStreams
from agents.nets import TwinQ, mish, torch_default


def dql_critic(n_seeds: int, obs_dim: int, act_dim: int, streams: SeedStreams, *, hidden: int = 256,
               layer_norm: bool = False) -> TwinQ:
    """DQL's ``Critic``: two 3x256 Mish MLPs (``nn.Linear`` default init); LayerNorm for CPQL/DTQL."""
    return TwinQ(n_seeds, obs_dim, act_dim, (hidden, hidden, hidden), mish, layer_norm=layer_norm).init_(
        streams, torch_default, bias="torch_default"
    )


def td_target(target_critic: TwinQ, next_observations: Tensor, next_actions: Tensor, rewards: Tensor,
              terminals: Tensor, discount: float) -> Tensor:
    """``r + gamma (1 - d) min_i max_k Q'_i(s', a'_k)``, ``[n_seeds, B]``.

    ``next_actions`` is ``[n_seeds, B, K, act_dim]``: K = 1 is the plain backup, K = 10 DQL's max-Q
    backup (max over samples per head, then min over heads). Computed without gradient.
    """
    with torch.no_grad():
        k = next_actions.shape[2]
        s_next = next_observations.unsqueeze(2).expand(-1, -1, k, -1)
        q1, q2 = target_critic(s_next, next_actions)
        target_q = torch.minimum(q1.max(dim=2).values, q2.max(dim=2).values)
        return rewards + discount * (1.0 - terminals) * target_q


def sampled_td_target(target_critic: TwinQ, batch: Batch, next_actions_for: Callable[[Tensor], Tensor],
                      discount: float, max_q_backup: bool, max_q_samples: int) -> Tensor:
    """DQL's critic target, ``[n_seeds, B]``: ``s'`` repeated K times (K = ``max_q_samples`` with the max-Q
    backup, else 1), ``a' = next_actions_for(s')`` (``[n_seeds, B, K, act_dim]``), then :func:`td_target`.
    The next actions are drawn without gradient."""
    k = max_q_samples if max_q_backup else 1
    with torch.no_grad():
        next_obs = batch.next_observations.unsqueeze(2).expand(-1, -1, k, -1)
        next_actions = next_actions_for(next_obs)
        return td_target(target_critic, batch.next_observations, next_actions, batch.rewards, batch.terminals,
                         discount)


def normalised_q_loss(critic: TwinQ, observations: Tensor, actions: Tensor, first_head: Tensor) -> Tensor:
    """Per-seed ``-Q_i(s, a).mean() / |Q_j(s, a)|.mean()`` (normaliser detached); ``first_head[k]``
    picks ``(i, j) = (1, 2)`` for seed ``k``, else ``(2, 1)``."""
    q1, q2 = critic(observations, actions)
    lead = torch.where(first_head[:, None], q1, q2)
    other = torch.where(first_head[:, None], q2, q1)
    return -lead.mean(-1) / other.abs().mean(-1).detach()


def coin(streams: SeedStreams) -> Tensor:
    """One fair coin per seed (``np.random.uniform() > 0.5`` in DQL), ``[n_seeds]`` bool."""
    return streams.rand(1)[:, 0] > 0.5


@torch.no_grad()
def ema_(target: nn.Module, source: nn.Module, decay: float) -> None:
    """``target <- decay * target + (1 - decay) * source`` (DQL ``EMA.update_model_average``)."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), 1.0 - decay)


def ema_due(step: int, start: int, every: int) -> bool:
    """DQL's schedule: ``step_ema`` runs when ``step % every == 0`` and does nothing before ``start``
    (the EMA copy keeps its initial weights until then); ``step`` counts updates done before this one."""
    return step % every == 0 and step >= start


@torch.no_grad()
def choose_by_q(candidates: Tensor, q: Tensor, streams: SeedStreams) -> Tensor:
    """Pick one of K candidates per state with probabilities ``softmax(q)`` (DQL ``sample_action``).

    ``candidates`` ``[n_seeds, N, K, act_dim]``, ``q`` ``[n_seeds, N, K]`` -> ``[n_seeds, N, act_dim]``.
    """
    probs = F.softmax(q, dim=-1)
    picks = torch.stack(
        [torch.multinomial(p, 1, generator=g).squeeze(-1) for p, g in zip(probs, streams.generators)]
    )
    return candidates.gather(2, picks[..., None, None].expand(-1, -1, 1, candidates.shape[-1])).squeeze(2)


@torch.no_grad()
def act_by_q(observations: Tensor, n_candidates: int, sample: Callable[[Tensor], Tensor], target_critic: TwinQ,
             streams: SeedStreams, q_temperature: float = 1.0) -> Tensor:
    """DQL ``sample_action``: ``sample(s)`` gives ``n_candidates`` actions per state (``s`` repeated, ``[n_seeds,
    N, K, obs_dim]``), one of which is drawn by ``softmax(q_temperature * min_i Q'_i(s, a_k))`` from ``streams``
    (DQL: ``q_temperature`` 1; CleanDiffuser's ``weight_temperature`` is set per task)."""
    obs = observations.unsqueeze(2).expand(-1, -1, n_candidates, -1)
    candidates = sample(obs)
    q = torch.minimum(*target_critic(obs, candidates))
    return choose_by_q(candidates, q if q_temperature == 1.0 else q_temperature * q, streams)  # 1: no extra operation
