"""CPQL against its equations and the official update's structure (cccedric/cpql), on tiny inputs."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from agent_testing import (
    assert_same_update, random_batch, random_transitions, train_group_and_alone, trained_and_restored,
)
from agents.base import Batch, SeedStreams
from agents.cpql import CPQL, CPQLConfig, KarrasSchedule, consistency_bc_losses, denoise, sample_actions
from agents.nets import clip_grad_norm_per_seed_

S_MIN, S_MAX, S_DATA, RHO, N = 0.002, 80.0, 0.5, 7.0, 40


def make_config(**changes) -> CPQLConfig:
    values = dict(
        steps=100, batch_size=8, reward_transform="none", lr=3e-4, critic_lr=3e-4, alpha=1.0, eta=1.0, grad_norm=9.0,
        discount=0.99, max_q_backup=False, max_q_samples=10, sampler="onestep", multistep_levels=(0, 20, 40),
        bc_loss="recon", sigma_min=S_MIN, sigma_max=S_MAX, sigma_data=S_DATA, rho=RHO, num_scales=N,
        weight_schedule="karras", hidden_dim=32, t_dim=16, critic_layer_norm=True, ema_decay=0.995, ema_start=1000,
        ema_every=5, lr_decay=False, lr_decay_t_max=2000, num_candidates=50,
    )
    values.update(changes)
    return CPQLConfig(**values)


SCHEDULE = KarrasSchedule(S_MIN, S_MAX, S_DATA, RHO, N)


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)  # the tests' own random inputs (perturbations, observations) are reproducible


def karras_level(i: float) -> float:
    """get_sigmas_karras / consistency_losses, written out in float64."""
    return (S_MAX ** (1 / RHO) + i / (N - 1) * (S_MIN ** (1 / RHO) - S_MAX ** (1 / RHO))) ** RHO


def ref_denoise(net, x, sigma, obs):
    """KarrasDenoiser.denoise with get_scalings_for_boundary_condition, written out."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype).expand(x.shape[:-1])[..., None]
    c_skip = S_DATA**2 / ((sigma - S_MIN) ** 2 + S_DATA**2)
    c_out = (sigma - S_MIN) * S_DATA / torch.sqrt(sigma**2 + S_DATA**2)
    c_in = 1 / torch.sqrt(sigma**2 + S_DATA**2)
    out = net(c_in * x, 250.0 * torch.log(sigma[..., 0] + 1e-44), obs)
    return (c_skip * x + c_out * out).clamp(-1, 1)


class CountingNet(nn.Module):
    """Wraps a network, recording the time inputs of every evaluation."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.times = []

    def forward(self, x, time, obs):
        self.times.append(time.detach().clone())
        return self.net(x, time, obs)


class ToyNet(nn.Module):
    """F(x, t, s) = w x + 0.01 t + s[..., :act_dim]: hand-computable."""

    def __init__(self, w: float):
        super().__init__()
        self.w = w

    def forward(self, x, time, obs):
        return self.w * x + 0.01 * time[..., None] + obs[..., : x.shape[-1]]


# ---- schedule, scalings, weights ----------------------------------------------------------------


def test_karras_schedule_in_the_codes_order():
    sigmas = SCHEDULE.sigmas()
    expected = torch.tensor([karras_level(i) for i in range(N)], dtype=torch.float32)
    torch.testing.assert_close(sigmas, expected)
    assert sigmas[0].item() == pytest.approx(80.0, rel=1e-5) and sigmas[-1].item() == pytest.approx(0.002, rel=1e-5)
    assert torch.all(sigmas[1:] < sigmas[:-1])  # descending: index 0 is sigma_max
    # the loss's formula on integer indices gives the same levels
    idx = torch.tensor([[0, 1, 20, 38, 39]])
    torch.testing.assert_close(SCHEDULE.sigma(idx), sigmas[idx])
    # rho = 1 would make the levels linear in sigma: the formula really uses rho
    linear = KarrasSchedule(S_MIN, S_MAX, S_DATA, 1.0, N).sigmas()
    torch.testing.assert_close(linear, torch.linspace(S_MAX, S_MIN, N))


def test_boundary_scalings_and_weights_against_the_formulas():
    sigma = torch.tensor([S_MIN, 0.01, 0.5, 2.0, S_MAX], dtype=torch.float64)
    c_skip, c_out, c_in = SCHEDULE.scalings(sigma)
    torch.testing.assert_close(c_skip, 0.25 / ((sigma - 0.002) ** 2 + 0.25))
    torch.testing.assert_close(c_out, (sigma - 0.002) * 0.5 / (sigma**2 + 0.25).sqrt())
    torch.testing.assert_close(c_in, 1 / (sigma**2 + 0.25).sqrt())
    assert c_skip[0].item() == 1.0 and c_out[0].item() == 0.0  # exactly, at sigma_min
    torch.testing.assert_close(SCHEDULE.weight(sigma), 1 / sigma**2 + 4.0)  # "karras": snr + 1/sigma_data^2
    assert SCHEDULE.weight(torch.tensor([0.5])).item() == pytest.approx(8.0)
    uniform = KarrasSchedule(S_MIN, S_MAX, S_DATA, RHO, N, "uniform")
    torch.testing.assert_close(uniform.weight(sigma), torch.ones_like(sigma))


def test_consistency_function_is_the_identity_at_sigma_min():
    net = ToyNet(3.0)
    x = torch.rand(2, 5, 2) * 2 - 1
    obs = torch.randn(2, 5, 3)
    torch.testing.assert_close(denoise(net, SCHEDULE, x, S_MIN, obs), x, rtol=0, atol=0)
    for sigma in (0.01, 1.0, 80.0):
        torch.testing.assert_close(denoise(net, SCHEDULE, x, sigma, obs), ref_denoise(net, x, sigma, obs))
    big = torch.full((1, 1, 2), 5.0)
    assert denoise(ToyNet(1.0), SCHEDULE, big, 1.0, torch.zeros(1, 1, 3)).abs().max() <= 1.0  # output clamped


# ---- BC losses ----------------------------------------------------------------------------------


def test_reconstruction_and_consistency_losses_on_tiny_inputs():
    actor, target = ToyNet(0.5), ToyNet(-0.2)
    obs = torch.tensor([[[0.1, -0.2, 0.3], [0.0, 0.4, -0.1]]])
    actions = torch.tensor([[[0.2, -0.5], [0.9, 0.1]]])
    noise = torch.tensor([[[0.3, -1.0], [0.7, 0.2]]])
    indices = torch.tensor([[38, 30]])
    recon, consistency = consistency_bc_losses(actor, target, SCHEDULE, obs, actions, noise, indices)
    expected_recon, expected_cons = [], []
    for b in range(2):
        n = int(indices[0, b])
        t, t2 = karras_level(n), karras_level(n + 1)
        a, z, s = actions[0, b].double(), noise[0, b].double(), obs[0, b].double()
        x_t = a + t * z
        f = ref_denoise(actor, x_t[None, None], t, s[None, None])[0, 0]
        x_t2 = a + t2 * z  # one Euler step of dx/dsigma = (x - a)/sigma from x_t
        f_target = ref_denoise(target, x_t2[None, None], t2, s[None, None])[0, 0]
        weight = 1 / t**2 + 1 / 0.25
        expected_recon.append(weight * ((f - a) ** 2).mean())
        expected_cons.append(weight * ((f - f_target) ** 2).mean())
    torch.testing.assert_close(recon[0].double(), torch.stack(expected_recon), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(consistency[0].double(), torch.stack(expected_cons), rtol=1e-4, atol=1e-6)
    assert consistency[0, 0] != recon[0, 0]


def test_consistency_target_carries_no_gradient():
    agent = CPQL(3, 2, make_config(), [0], "cpu")
    agent.actor_target.requires_grad_(True)  # even if it could take gradients, the target branch gives none
    b = random_batch(1)
    _, cons = consistency_bc_losses(agent.actor, agent.actor_target, agent.schedule, b.observations, b.actions,
                                    torch.randn(1, 8, 2), torch.randint(0, 39, (1, 8)))
    cons.sum().backward()
    assert all(p.grad is None for p in agent.actor_target.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.actor.parameters())


@pytest.mark.parametrize("bc_loss", ["recon", "consistency"])
def test_bc_loss_switch_selects_the_optimised_term(bc_loss):
    agent = CPQL(3, 2, make_config(bc_loss=bc_loss, eta=0.0), [0, 1], "cpu")
    with torch.no_grad():  # let the EMA target differ from the actor, so the two terms differ
        for p in agent.actor_target.parameters():
            p.add_(0.3 * torch.randn_like(p))
    before = copy.deepcopy(agent)
    batch = random_batch(2)
    metrics = agent.update(batch)
    other = "consistency" if bc_loss == "recon" else "recon"
    torch.testing.assert_close(metrics["bc_loss"], metrics[f"{bc_loss}_loss"], rtol=0, atol=0)
    assert not torch.allclose(metrics["bc_loss"], metrics[f"{other}_loss"])
    # with eta = 0 the actor's gradient is the gradient of the chosen term alone
    noise = copy.deepcopy(before.noise)
    noise.randn(8, 1, 2)  # the critic's next actions
    z, idx = noise.randn(8, 2), noise.randint(39, 8)
    recon, cons = consistency_bc_losses(before.actor, before.actor_target, before.schedule, batch.observations,
                                        batch.actions, z, idx)
    chosen = recon if bc_loss == "recon" else cons
    chosen.mean(-1).sum().backward()
    clip_grad_norm_per_seed_(before.actor.parameters(), 9.0)
    for p, q in zip(agent.actor.parameters(), before.actor.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-6)


# ---- sampling -----------------------------------------------------------------------------------


def test_one_step_sampling_is_one_evaluation_at_sigma_max():
    agent = CPQL(3, 2, make_config(), [0, 1], "cpu")
    counting = CountingNet(agent.actor)
    obs = torch.randn(2, 4, 3)
    streams = SeedStreams([0, 1], "s", "cpu")
    reference = copy.deepcopy(streams)
    a = sample_actions(counting, agent.schedule, obs, 2, streams, agent.renoise_sigmas)
    assert len(counting.times) == 1
    torch.testing.assert_close(counting.times[0], torch.full((2, 4), 250 * math.log(80.0)))
    expected = ref_denoise(agent.actor, reference.randn(4, 2) * 80.0, 80.0, obs)
    torch.testing.assert_close(a, expected)


def test_multistep_sampling_is_four_evaluations_at_the_codes_levels():
    agent = CPQL(3, 2, make_config(sampler="multistep"), [0], "cpu")
    # ts = [0, 20, 40] -> sigma_max, sigma_20, and index 40 (past the last level 39) clipped up to sigma_min
    levels = (80.0, karras_level(20), S_MIN)
    assert karras_level(40) < S_MIN
    assert agent.renoise_sigmas == pytest.approx(levels)
    counting = CountingNet(agent.actor)
    obs = torch.randn(1, 4, 3)
    streams = SeedStreams([0], "s", "cpu")
    reference = copy.deepcopy(streams)
    a = sample_actions(counting, agent.schedule, obs, 2, streams, agent.renoise_sigmas)
    assert len(counting.times) == 4
    torch.testing.assert_close(torch.stack([t[0, 0] for t in counting.times]),
                               250 * torch.log(torch.tensor((80.0, *levels))))
    x = ref_denoise(agent.actor, reference.randn(4, 2) * 80.0, 80.0, obs)
    for sigma in levels:
        x = ref_denoise(agent.actor, x + reference.randn(4, 2) * math.sqrt(sigma**2 - S_MIN**2), sigma, obs)
    torch.testing.assert_close(a, x)


# ---- the update against ql_cm.py train ----------------------------------------------------------


@pytest.mark.parametrize("antmaze", [False, True])
def test_update_follows_the_official_structure(antmaze, seed=0):
    """Critic on a' from the ONLINE actor and the EMA critic; then actor (alpha * recon + eta * Q) on the updated
    critic; per-seed clipping at gn on both; no target update before step 1000."""
    changes = dict(max_q_backup=True, sampler="multistep", eta=2.0) if antmaze else dict(eta=2.0)
    torch.manual_seed(seed)
    cfg = make_config(grad_norm=0.5, **changes)
    agent = CPQL(3, 2, cfg, [0, 1], "cpu")
    with torch.no_grad():  # make online and target networks differ, as after training
        for p in (*agent.actor.parameters(), *agent.critic.parameters()):
            p.add_(0.2 * torch.randn_like(p))
    batch = random_batch(2)
    before = copy.deepcopy(agent)
    metrics = agent.update(batch)

    ref = copy.deepcopy(before)
    noise = ref.noise
    k = 10 if antmaze else 1
    renoise = (80.0, karras_level(20), S_MIN) if antmaze else ()

    def sample(net, obs, streams=noise):
        x = ref_denoise(net, streams.randn(*obs.shape[1:-1], 2) * 80.0, 80.0, obs)
        for sigma in renoise:
            x = ref_denoise(net, x + streams.randn(*obs.shape[1:-1], 2) * math.sqrt(sigma**2 - S_MIN**2), sigma, obs)
        return x

    # critic
    next_obs = batch.next_observations[:, :, None].expand(-1, -1, k, -1)
    with torch.no_grad():
        next_a = sample(ref.actor, next_obs)  # the online actor
        q1t, q2t = ref.critic_target(next_obs, next_a)
        target = batch.rewards + 0.99 * (1 - batch.terminals) * torch.minimum(q1t.max(-1).values, q2t.max(-1).values)
    torch.testing.assert_close(metrics["target_q"], target.mean(-1))
    with torch.no_grad():  # the EMA actor, with the same noise, would give a different target
        q1e, q2e = ref.critic_target(next_obs, sample(ref.actor_target, next_obs, copy.deepcopy(before.noise)))
    q1, q2 = ref.critic(batch.observations, batch.actions)
    critic_loss = ((q1 - target) ** 2).mean(-1) + ((q2 - target) ** 2).mean(-1)
    torch.testing.assert_close(metrics["critic_loss"], critic_loss)
    ref.critic_opt.zero_grad()
    critic_loss.sum().backward()
    norms = clip_grad_norm_per_seed_(ref.critic.parameters(), 0.5)
    assert torch.all(norms > 0.5)  # clipping active
    for p, q in zip(agent.critic.parameters(), ref.critic.parameters()):
        torch.testing.assert_close(p.grad, q.grad)  # clipped per seed; the actor loss added nothing
    ref.critic_opt.step()
    for p, q in zip(agent.critic.parameters(), ref.critic.parameters()):
        torch.testing.assert_close(p, q)

    # actor
    z, idx = noise.randn(8, 2), noise.randint(39, 8)
    t = SCHEDULE.sigma(idx)  # float32 levels, as the update computes them (the formula is tested above)
    f = ref_denoise(ref.actor, batch.actions + z * t[..., None], t, batch.observations)
    bc = ((f - batch.actions) ** 2).mean(-1) * (1 / t**2 + 4.0)
    new_a = sample(ref.actor, batch.observations)
    first = noise.rand(1)[:, 0] > 0.5
    n1, n2 = ref.critic(batch.observations, new_a)  # the updated critic
    lead, other = torch.where(first[:, None], n1, n2), torch.where(first[:, None], n2, n1)
    q_loss = -lead.mean(-1) / other.abs().mean(-1).detach()
    actor_loss = bc.mean(-1) + 2.0 * q_loss
    torch.testing.assert_close(metrics["bc_loss"], bc.mean(-1), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(metrics["q_loss"], q_loss)
    torch.testing.assert_close(metrics["actor_loss"], actor_loss, rtol=1e-4, atol=1e-6)
    ref.actor_opt.zero_grad()
    actor_loss.sum().backward()
    clip_grad_norm_per_seed_(ref.actor.parameters(), 0.5)
    for p, q in zip(agent.actor.parameters(), ref.actor.parameters()):  # Adam's first step amplifies rounding
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-6)  # in near-zero gradients: compare these

    assert not torch.allclose(torch.minimum(q1e, q2e), torch.minimum(q1t, q2t))
    for new, old in zip((*agent.actor_target.parameters(), *agent.critic_target.parameters()),
                        (*before.actor_target.parameters(), *before.critic_target.parameters())):
        torch.testing.assert_close(new, old, rtol=0, atol=0)  # step 0 < 1000: targets untouched
    assert agent.step == 1


def test_ema_of_actor_and_critic_every_5_steps_from_step_1000_and_no_polyak():
    agent = CPQL(3, 2, make_config(), [0, 1], "cpu")
    batch = random_batch(2)
    for _ in range(3):  # early steps (step 0 is a multiple of 5): no target update at all
        agent.update(batch)
    fresh = CPQL(3, 2, make_config(), [0, 1], "cpu")
    for t, c in zip((*agent.critic_target.parameters(), *agent.actor_target.parameters()),
                    (*fresh.critic.parameters(), *fresh.actor.parameters())):
        torch.testing.assert_close(t, c, rtol=0, atol=0)  # still the initial weights: no tau = 0.005 Polyak
    agent.step = 997
    updated = []
    for step in range(997, 1012):
        old = copy.deepcopy(agent)
        agent.update(batch)
        pairs = [(agent.actor_target, old.actor_target, agent.actor), (agent.critic_target, old.critic_target, agent.critic)]
        moved = []
        for target, old_target, online in pairs:
            new_t, old_t, on = (list(m.parameters()) for m in (target, old_target, online))
            if all(torch.equal(a, b) for a, b in zip(new_t, old_t)):
                moved.append(False)
            else:
                for a, b, c in zip(new_t, old_t, on):
                    torch.testing.assert_close(a, 0.995 * b + 0.005 * c)
                moved.append(True)
        assert moved[0] == moved[1]  # actor and critic targets move together
        if moved[0]:
            updated.append(step)
    assert updated == [1000, 1005, 1010]


def test_per_seed_clipping_leaves_other_seeds_untouched():
    cfg = make_config(grad_norm=1.0)
    batch = random_batch(2)
    batch.rewards[0] *= 1000.0  # seed 0's critic gradient is huge and clipped; seed 1's is not
    group = CPQL(3, 2, cfg, [0, 1], "cpu")
    alone = [CPQL(3, 2, cfg, [s], "cpu") for s in (0, 1)]
    metrics = group.update(batch)
    assert metrics["critic_grad_norm"][0] > 100 * metrics["critic_grad_norm"][1]
    for k, single in enumerate(alone):
        one = Batch(*(getattr(batch, f)[k : k + 1] for f in ("observations", "actions", "rewards", "next_observations", "terminals")))
        m = single.update(one)
        torch.testing.assert_close(m["critic_grad_norm"][0], metrics["critic_grad_norm"][k])
        for g, a in zip(group.critic.parameters(), single.critic.parameters()):
            torch.testing.assert_close(g[k], a[0], rtol=1e-5, atol=1e-6)
        for g, a in zip(group.actor.parameters(), single.actor.parameters()):
            torch.testing.assert_close(g[k], a[0], rtol=1e-5, atol=1e-6)


def test_critic_lr_is_fixed_and_lr_decay_is_the_official_per_step_cosine():
    agent = CPQL(3, 2, make_config(lr=1e-3), [0], "cpu")
    assert agent.actor_opt.param_groups[0]["lr"] == 1e-3 and agent.critic_opt.param_groups[0]["lr"] == 3e-4
    agent = CPQL(3, 2, make_config(lr_decay=True, lr_decay_t_max=4), [0], "cpu")
    batch = random_batch(1)
    for n in range(1, 9):  # CosineAnnealingLR(T_max = num_epochs) stepped every gradient step: it comes back up
        agent.update(batch)
        factor = 0.5 * (1 + math.cos(math.pi * n / 4))
        assert agent.actor_opt.param_groups[0]["lr"] == pytest.approx(3e-4 * factor, abs=1e-12)
        assert agent.critic_opt.param_groups[0]["lr"] == pytest.approx(3e-4 * factor, abs=1e-12)


# ---- seeds, checkpoints, inference --------------------------------------------------------------


def test_seeds_trained_together_match_a_seed_trained_alone():
    cfg = make_config()
    group, alone = CPQL(3, 2, cfg, [0, 1, 2], "cpu"), CPQL(3, 2, cfg, [1], "cpu")
    train_group_and_alone(group, alone, random_transitions(), steps=10)
    for g, a in zip((*group.actor.parameters(), *group.critic.parameters()),
                    (*alone.actor.parameters(), *alone.critic.parameters())):
        torch.testing.assert_close(g[1], a[0], rtol=1e-4, atol=1e-5)
    obs = torch.randn(1, 4, 3)
    torch.testing.assert_close(group.act(obs.expand(3, 4, 3))[1], alone.act(obs)[0], rtol=1e-4, atol=1e-5)


def test_state_dict_round_trip_continues_identically():
    cfg = make_config(sampler="multistep", max_q_backup=True, lr_decay=True, lr_decay_t_max=5)
    a, b = trained_and_restored(lambda: CPQL(3, 2, cfg, [0, 1], "cpu"), steps=3)
    assert b.step == 3
    assert_same_update(a, b, random_batch(2, seed=9))
    obs = torch.randn(2, 3, 3)
    torch.testing.assert_close(a.act(obs), b.act(obs), rtol=0, atol=0)


class FakeCritic(nn.Module):
    """Q_1 = 1e6 * a_0, Q_2 = Q_1 + 5: the softmax over min Q is (almost surely) the argmax of a_0."""

    def forward(self, obs, actions):
        q = 1e6 * actions[..., 0]
        return q, q + 5.0


@pytest.mark.parametrize("sampler", ["onestep", "multistep"])
def test_act_picks_among_50_online_candidates_by_softmax_of_target_min_q(sampler):
    agent = CPQL(3, 2, make_config(sampler=sampler), [0, 1], "cpu")
    agent.critic_target = FakeCritic()  # the online critic is left as it is: act must use the target
    counting = CountingNet(agent.actor)
    agent.actor = counting
    obs = torch.randn(2, 4, 3)
    streams = copy.deepcopy(agent.act_noise)
    chosen = agent.act(obs)
    assert len(counting.times) == (1 if sampler == "onestep" else 4)
    assert counting.times[0].shape == (2, 4, 50)
    candidates = sample_actions(counting.net, agent.schedule, obs[:, :, None].expand(-1, -1, 50, -1), 2, streams,
                                agent.renoise_sigmas)
    best = candidates.gather(2, candidates[..., :1].argmax(2, keepdim=True).expand(-1, -1, 1, 2)).squeeze(2)
    torch.testing.assert_close(chosen, best)
    assert chosen.abs().max() <= 1.0


def test_act_softmax_is_a_distribution_over_candidates():
    """Equal target Q values: every candidate is equally likely (multinomial over softmax, not argmax)."""

    class Flat(nn.Module):
        def forward(self, obs, actions):
            return torch.zeros(actions.shape[:-1]), torch.zeros(actions.shape[:-1])

    agent = CPQL(3, 2, make_config(), [0], "cpu")
    agent.critic_target = Flat()
    obs = torch.zeros(1, 200, 3)
    streams = copy.deepcopy(agent.act_noise)
    chosen = agent.act(obs)
    candidates = sample_actions(agent.actor, agent.schedule, obs[:, :, None].expand(-1, -1, 50, -1), 2, streams,
                                agent.renoise_sigmas)
    position = (candidates == chosen[:, :, None]).all(-1).float().argmax(-1)
    assert len(np.unique(position.numpy())) > 20  # spread over many candidates
