"""Diffusion-QL against the DDPM equations and the official update's structure, on tiny inputs."""

import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from agent_testing import (
    assert_same_update, perturb_, q_min, random_batch, random_transitions, train_group_and_alone,
)
from agents.base import Batch, SeedStreams
from agents.dql import DQL, DDPMSchedule, DQLConfig, official_lr_decay, vp_beta_schedule
from agents.nets import sinusoidal_embedding
from benchmarks.config import resolve_config
from benchmarks.tasks import SUITES, get_task, task_for_dataset


def make_config(**changes) -> DQLConfig:
    values = dict(
        steps=100, batch_size=8, reward_transform="none", actor_lr=3e-4, critic_lr=3e-4, discount=0.99, tau=0.005,
        eta=1.0, n_timesteps=5, hidden_dim=16, time_embed_dim=16, max_q_backup=False, max_q_samples=10,
        grad_norm=-1.0, ema_decay=0.995, ema_start=1000, ema_every=5, lr_decay=False, lr_decay_every=50_000,
        lr_decay_t_max=2000, num_candidates=50,
    )
    values.update(changes)
    return DQLConfig(**values)


# ------------------------------------------------------------------------------------------------
# the DDPM pieces against their closed forms


def test_vp_schedule_values():
    betas = vp_beta_schedule(5)
    expected = [1 - math.exp(-0.1 / 5 - 0.5 * 9.9 * (2 * i - 1) / 25) for i in range(1, 6)]
    torch.testing.assert_close(betas, torch.tensor(expected))
    # hand values: beta_1 = 1 - exp(-0.218), beta_5 = 1 - exp(-1.802)
    assert betas[0].item() == pytest.approx(0.195875, abs=1e-6)
    assert betas[4].item() == pytest.approx(0.835031, abs=1e-6)
    # abar_T = exp(-(b_min + (b_max - b_min) / 2)) = exp(-5.05) whatever T
    schedule = DDPMSchedule(betas)
    assert schedule.alphas_cumprod[-1].item() == pytest.approx(math.exp(-5.05), rel=1e-5)
    assert DDPMSchedule(vp_beta_schedule(20)).alphas_cumprod[-1].item() == pytest.approx(math.exp(-5.05), rel=1e-4)


def test_q_sample_is_the_forward_marginal():
    schedule = DDPMSchedule(vp_beta_schedule(5))
    abar = torch.cumprod(1 - vp_beta_schedule(5).double(), 0)
    x0 = torch.tensor([[[0.5, -1.0], [0.2, 0.9]]])  # [1 seed, 2, 2]
    noise = torch.tensor([[[1.0, 0.0], [-2.0, 0.5]]])
    t = torch.tensor([[0, 3]])
    got = schedule.q_sample(x0, t, noise)
    for j, tj in enumerate((0, 3)):
        expected = abar[tj].sqrt() * x0[0, j] + (1 - abar[tj]).sqrt() * noise[0, j]
        torch.testing.assert_close(got[0, j], expected.float())
    # predict_start_from_noise inverts it
    torch.testing.assert_close(schedule.predict_start_from_noise(got, t, noise), x0)


def test_posterior_is_bayes_rule_of_the_forward_process():
    """q(x_{t-1} | x_t, x_0) ∝ N(x_t; sqrt(alpha_t) x_{t-1}, beta_t) N(x_{t-1}; sqrt(abar_{t-1}) x_0, 1 - abar_{t-1})."""
    betas = vp_beta_schedule(5).double()
    alphas, abar = 1 - betas, torch.cumprod(1 - betas, 0)
    schedule = DDPMSchedule(vp_beta_schedule(5))
    x0, xt = torch.tensor([[[0.3, -0.7]]]), torch.tensor([[[1.2, 0.4]]])
    for t in range(5):
        mean, var, log_var = schedule.q_posterior(x0, xt, t)
        if t == 0:  # abar_{-1} = 1: the posterior is a point mass at x_0
            torch.testing.assert_close(mean, x0)
            assert var.item() == 0.0 and log_var.item() == pytest.approx(math.log(1e-20))
            continue
        precision = alphas[t] / betas[t] + 1 / (1 - abar[t - 1])
        expected_var = 1 / precision
        expected_mean = expected_var * (alphas[t].sqrt() / betas[t] * xt.double() + abar[t - 1].sqrt() / (1 - abar[t - 1]) * x0.double())
        torch.testing.assert_close(mean, expected_mean.float())
        assert var.item() == pytest.approx(expected_var.item(), rel=1e-5)
        assert log_var.item() == pytest.approx(math.log(expected_var.item()), rel=1e-5)
    # index tensors give the same constants, per element
    mean, var, _ = schedule.q_posterior(x0.expand(1, 3, 2), xt.expand(1, 3, 2), torch.tensor([[1, 2, 4]]))
    for j, t in enumerate((1, 2, 4)):
        torch.testing.assert_close(mean[0, j], schedule.q_posterior(x0, xt, t)[0][0, 0])


def test_sinusoidal_embedding_matches_dql_helpers():
    t = torch.tensor([[0, 1, 4]])
    emb = sinusoidal_embedding(t, 16)
    assert emb.shape == (1, 3, 16)
    freqs = [math.exp(-math.log(10000) * i / 7) for i in range(8)]
    for j, tj in enumerate((0, 1, 4)):
        expected = [math.sin(tj * w) for w in freqs] + [math.cos(tj * w) for w in freqs]
        torch.testing.assert_close(emb[0, j], torch.tensor(expected))


def test_epsilon_network_is_dqls_mlp():
    """concat[x_t, time_mlp(t), s] -> 3 x (Linear 256 + Mish) -> Linear(act_dim); time_mlp 16 -> 32 -> Mish -> 16."""
    agent = DQL(3, 2, make_config(hidden_dim=256), [0, 1], "cpu")
    net = agent.actor.model
    shapes = [tuple(p.shape) for p in net.parameters()]
    assert shapes == [(2, 16, 32), (2, 1, 32), (2, 32, 16), (2, 1, 16), (2, 21, 256), (2, 1, 256), (2, 256, 256),
                      (2, 1, 256), (2, 256, 256), (2, 1, 256), (2, 256, 2), (2, 1, 2)]
    x, s, t = torch.randn(2, 4, 2), torch.randn(2, 4, 3), torch.tensor([[0, 1, 2, 4]] * 2)
    got = net(x, t, s)
    for k in range(2):
        w = [p[k] for p in net.parameters()]
        lin = lambda h, i: h @ w[2 * i] + w[2 * i + 1][0]  # noqa: E731
        temb = lin(F.mish(lin(sinusoidal_embedding(t[k], 16), 0)), 1)
        h = torch.cat([x[k], temb, s[k]], -1)
        for i in (2, 3, 4):
            h = F.mish(lin(h, i))
        torch.testing.assert_close(got[k], lin(h, 5))
    # nn.Linear's default init: weights and biases within 1/sqrt(fan_in), different per seed
    first = net.body.linears[0]
    assert first.weight.abs().max() <= 1 / math.sqrt(21) and first.bias.abs().max() <= 1 / math.sqrt(21)
    assert first.bias.abs().min() > 0 and not torch.equal(first.weight[0], first.weight[1])


def test_bc_loss_equation():
    agent = DQL(3, 2, make_config(), [0, 1], "cpu")
    obs, actions = torch.randn(2, 4, 3), torch.rand(2, 4, 2) * 2 - 1
    t, noise = torch.tensor([[0, 1, 2, 4], [4, 4, 3, 0]]), torch.randn(2, 4, 2)
    abar = torch.cumprod(1 - vp_beta_schedule(5), 0)
    x_t = abar[t].sqrt()[..., None] * actions + (1 - abar[t]).sqrt()[..., None] * noise
    expected = (noise - agent.actor.model(x_t, t, obs)).pow(2).mean(dim=(1, 2))
    torch.testing.assert_close(agent.actor.bc_loss(obs, actions, t, noise), expected)


def test_sampling_is_the_clipped_ddpm_reverse_chain():
    """x_T ~ N(0, I); x0_hat = clamp((x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)); posterior mean (+ noise if t > 0)."""
    agent = DQL(3, 2, make_config(), [0, 1], "cpu")
    obs = torch.randn(2, 6, 3)
    streams = SeedStreams([0, 1], "test", "cpu")
    replay = copy.deepcopy(streams)
    got = agent.actor.sample(obs, streams)

    betas = vp_beta_schedule(5).double()
    alphas, abar = 1 - betas, torch.cumprod(1 - betas, 0)
    abar_prev = torch.cat([torch.ones(1, dtype=abar.dtype), abar[:-1]])
    x = replay.randn(6, 2)
    with torch.no_grad():
        for t in reversed(range(5)):
            eps = agent.actor.model(x, torch.full((2, 6), t), obs)
            x0 = ((x - (1 - abar[t]).sqrt() * eps) / abar[t].sqrt()).clamp(-1, 1)
            mean = (abar_prev[t].sqrt() * betas[t] * x0 + alphas[t].sqrt() * (1 - abar_prev[t]) * x) / (1 - abar[t])
            if t > 0:
                std = (betas[t] * (1 - abar_prev[t]) / (1 - abar[t])).sqrt()
                x = (mean + std * replay.randn(6, 2)).float()
            else:
                x = mean.float()
    torch.testing.assert_close(got, x.clamp(-1, 1), rtol=1e-5, atol=1e-5)
    assert got.abs().max() <= 1.0


# ------------------------------------------------------------------------------------------------
# the update against the official structure


class HeadsCritic(nn.Module):
    """A stand-in critic with given heads ``(Q_1(a), Q_2(a))``."""

    def __init__(self, q1, q2):
        super().__init__()
        self.q1, self.q2 = q1, q2

    def forward(self, obs, actions):
        return self.q1(actions), self.q2(actions)


def critic_target_by_hand(agent: DQL, actor, batch: Batch, noise: SeedStreams) -> torch.Tensor:
    with torch.no_grad():
        next_actions = actor.sample(batch.next_observations, noise)
        target_q = q_min(agent.target_critic, batch.next_observations, next_actions)
        return batch.rewards + 0.99 * (1 - batch.terminals) * target_q


def test_update_follows_the_official_order():
    """Critic on a' from the EMA actor; then BC + eta * normalised Q of a BPTT chain, on the UPDATED critic."""
    agent = DQL(3, 2, make_config(eta=2.5), [0, 1], "cpu")
    perturb_(agent.ema_actor, 0.3, seed=1)  # the EMA actor, the actor and the critics all differ, as after training
    perturb_(agent.critic, 0.1, seed=2)
    batch = random_batch(2)
    before = copy.deepcopy(agent)
    metrics = agent.update(batch)

    noise = copy.deepcopy(before.noise)
    target = critic_target_by_hand(before, before.ema_actor, batch, noise)
    q1, q2 = before.critic(batch.observations, batch.actions)
    critic_loss = ((q1 - target) ** 2).mean(-1) + ((q2 - target) ** 2).mean(-1)
    torch.testing.assert_close(metrics["critic_loss"], critic_loss.detach())
    torch.testing.assert_close(metrics["target_q"], target.mean(-1))
    wrong = critic_target_by_hand(before, before.actor, batch, copy.deepcopy(before.noise))  # online actor: differs
    assert not torch.allclose(wrong, target, atol=1e-3)

    t, eps = noise.randint(5, 8), noise.randn(8, 2)
    with torch.no_grad():
        bc = before.actor.bc_loss(batch.observations, batch.actions, t, eps)
        new_actions = before.actor.sample(batch.observations, noise)
        first = noise.rand(1)[:, 0] > 0.5

        def q_term(critic):
            q1, q2 = critic(batch.observations, new_actions)
            lead, other = torch.where(first[:, None], q1, q2), torch.where(first[:, None], q2, q1)
            return -lead.mean(-1) / other.abs().mean(-1)

        expected = bc + 2.5 * q_term(agent.critic)
    torch.testing.assert_close(metrics["bc_loss"], bc)
    torch.testing.assert_close(metrics["actor_loss"], expected)
    assert not torch.allclose(bc + 2.5 * q_term(before.critic), expected, atol=1e-4)  # the pre-update critic: differs

    # EMA untouched at step 0 (before step_start_ema); target critic Polyak every step
    for e_new, e_old in zip(agent.ema_actor.parameters(), before.ema_actor.parameters()):
        torch.testing.assert_close(e_new, e_old, rtol=0, atol=0)
    for t_new, t_old, c_new in zip(agent.target_critic.parameters(), before.target_critic.parameters(), agent.critic.parameters()):
        torch.testing.assert_close(t_new, 0.995 * t_old + 0.005 * c_new)
    assert agent.step == 1


def test_max_q_backup_takes_max_over_10_ema_samples_then_min_over_heads(monkeypatch):
    agent = DQL(3, 2, make_config(max_q_backup=True), [0, 1], "cpu")
    perturb_(agent.ema_actor, 0.3)
    perturb_(agent.target_critic, 0.3, seed=3)
    batch = random_batch(2)
    before = copy.deepcopy(agent)
    metrics = agent.update(batch)
    with torch.no_grad():
        s_next = batch.next_observations.unsqueeze(2).expand(2, 8, 10, 3)
        a_next = before.ema_actor.sample(s_next, copy.deepcopy(before.noise))
        q1, q2 = before.target_critic(s_next, a_next)  # [2, 8, 10]
        target = batch.rewards + 0.99 * (1 - batch.terminals) * torch.minimum(q1.max(-1).values, q2.max(-1).values)
    torch.testing.assert_close(metrics["target_q"], target.mean(-1))

    # heads that disagree: Q'_1 = a_0, Q'_2 = a_1 -> min(max_k a_0k, max_k a_1k), not max_k min(a_0k, a_1k)
    agent.target_critic = HeadsCritic(lambda a: a[..., 0], lambda a: a[..., 1])
    agent.ema_actor = copy.deepcopy(agent.actor).requires_grad_(False)  # its samples spread over the box
    monkeypatch.setattr("agents.dql.polyak_", lambda *args: None)  # the stub has no parameters
    before = copy.deepcopy(agent)
    metrics = agent.update(batch)
    with torch.no_grad():
        a = before.ema_actor.sample(s_next, copy.deepcopy(before.noise))
    target = batch.rewards + 0.99 * (1 - batch.terminals) * torch.minimum(a[..., 0].max(-1).values, a[..., 1].max(-1).values)
    plain = batch.rewards + 0.99 * (1 - batch.terminals) * a.min(-1).values.max(-1).values
    torch.testing.assert_close(metrics["target_q"], target.mean(-1))
    assert not torch.allclose(plain.mean(-1), target.mean(-1), atol=1e-3)


def test_q_term_gradient_flows_through_every_reverse_step():
    """BPTT: each of the 5 epsilon-network calls of the actor's chain receives gradient from the Q term."""
    agent = DQL(3, 2, make_config(), [0, 1], "cpu")
    grads: list[torch.Tensor | None] = []
    chain_inputs: list[torch.Tensor | None] = []

    def keep(store: list, tensor: torch.Tensor) -> None:
        index = len(store)
        store.append(None)
        tensor.register_hook(lambda g: store.__setitem__(index, g))

    def record(module, inputs, output):
        if output.requires_grad:
            keep(grads, output)
            if inputs[0].requires_grad:
                keep(chain_inputs, inputs[0])

    ema_calls: list[bool] = []
    agent.actor.model.register_forward_hook(record)
    agent.ema_actor.model.register_forward_hook(lambda m, i, o: ema_calls.append(o.requires_grad))
    agent.update(random_batch(2, batch=64))

    assert ema_calls == [False] * 5  # the target action: 5 steps of the EMA actor, no graph
    assert len(grads) == 6  # 1 call for the BC loss + the 5 chained calls with gradient
    for g in grads:
        assert g is not None and (g.flatten(1).abs().sum(1) > 0).all()  # every seed, every step
    assert len(chain_inputs) == 4  # x_4 .. x_1 (x_T is the drawn noise) carry gradient back to earlier steps
    for g in chain_inputs:
        assert g is not None and (g.flatten(1).abs().sum(1) > 0).all()


def test_actor_step_does_not_touch_the_critic():
    agent = DQL(3, 2, make_config(), [0], "cpu")
    captured = {}
    agent.critic_opt.register_step_post_hook(
        lambda opt, args, kwargs: captured.__setitem__("grads", [p.grad.clone() for p in agent.critic.parameters()])
    )
    agent.update(random_batch(1))
    for p, g in zip(agent.critic.parameters(), captured["grads"]):  # the actor's backward left them as they were
        torch.testing.assert_close(p.grad, g, rtol=0, atol=0)


def test_ema_starts_at_step_1000_and_runs_every_5_steps():
    agent = DQL(3, 2, make_config(), [0, 1], "cpu")
    initial = copy.deepcopy(agent.ema_actor)
    batch = random_batch(2)
    for _ in range(6):  # steps 0..5: step % 5 == 0 at 0 and 5, but before step_start_ema
        agent.update(batch)
    for e, i in zip(agent.ema_actor.parameters(), initial.parameters()):
        torch.testing.assert_close(e, i, rtol=0, atol=0)

    agent.step = 996
    updated_at = []
    for _ in range(14):  # steps 996 .. 1009
        old = [p.clone() for p in agent.ema_actor.parameters()]
        step = agent.step
        agent.update(batch)
        if any(not torch.equal(o, p) for o, p in zip(old, agent.ema_actor.parameters())):
            updated_at.append(step)
            for o, e, a in zip(old, agent.ema_actor.parameters(), agent.actor.parameters()):
                torch.testing.assert_close(e, 0.995 * o + 0.005 * a)  # with the actor just updated
    assert updated_at == [1000, 1005]


def test_gradient_clipping_is_per_seed():
    """Seed 0's huge gradient is clipped to gn; seed 1's gradients equal those of seed 1 trained alone."""
    cfg = make_config(grad_norm=0.5)
    group, alone = DQL(3, 2, cfg, [0, 1], "cpu"), DQL(3, 2, cfg, [1], "cpu")
    batch = random_batch(2)
    batch.rewards[0] *= 1000.0
    single = Batch(**{f.name: getattr(batch, f.name)[1:] for f in dataclasses.fields(Batch)})

    def capture(agent):
        grads = {}
        for name in ("critic", "actor"):
            module = getattr(agent, name)
            getattr(agent, f"{name}_opt").register_step_pre_hook(
                lambda opt, args, kwargs, _m=module, _n=name: grads.__setitem__(_n, [p.grad.clone() for p in _m.parameters()])
            )
        return grads

    g_group, g_alone = capture(group), capture(alone)
    m_group, m_alone = group.update(batch), alone.update(single)
    for name in ("critic", "actor"):
        norms = torch.stack([g.reshape(2, -1).pow(2).sum(1) for g in g_group[name]]).sum(0).sqrt()
        raw = m_group[f"{name}_grad_norm"]
        torch.testing.assert_close(norms, raw.clamp(max=0.5), rtol=1e-4, atol=1e-6)
        for g, a in zip(g_group[name], g_alone[name]):
            torch.testing.assert_close(g[1], a[0], rtol=1e-5, atol=1e-7)
    assert m_group["critic_grad_norm"][0] > 100 * 0.5  # seed 0 was clipped hard
    for key in m_alone:
        torch.testing.assert_close(m_group[key][1], m_alone[key][0], rtol=1e-5, atol=1e-6)


def test_official_lr_decay_steps_once_per_50k_steps_against_t_max_epochs():
    decay = official_lr_decay(50_000, 2000)
    assert decay(0) == 1.0 and decay(49_999) == 1.0
    assert decay(50_000) == pytest.approx(0.5 * (1 + math.cos(math.pi / 2000)))
    assert decay(2_000_000) == pytest.approx(0.5 * (1 + math.cos(math.pi * 40 / 2000)))  # ~0.9990 after 2M steps
    # the same numbers as torch's CosineAnnealingLR stepped once per 50k steps
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=2000, eta_min=0.0)
    for _ in range(40):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(decay(2_000_000), rel=1e-9)

    agent = DQL(3, 2, make_config(lr_decay=True, actor_lr=1e-3), [0], "cpu")
    batch = random_batch(1)
    agent.actor_schedule.last_epoch = agent.critic_schedule.last_epoch = 49_998
    agent.update(batch)  # the 49_999th step: nothing yet
    assert agent.actor_opt.param_groups[0]["lr"] == 1e-3 and agent.critic_opt.param_groups[0]["lr"] == 3e-4
    agent.update(batch)  # the 50_000th step ends the official agent.train() call: one scheduler step
    assert agent.actor_opt.param_groups[0]["lr"] == pytest.approx(1e-3 * decay(50_000))
    assert agent.critic_opt.param_groups[0]["lr"] == pytest.approx(3e-4 * decay(50_000))


# ------------------------------------------------------------------------------------------------
# acting: 50 candidates from the actor, one drawn by softmax over min of the target critic's heads


def test_act_draws_one_of_50_actor_candidates_by_softmax_over_target_q():
    agent = DQL(3, 2, make_config(), [0, 1], "cpu")
    perturb_(agent.ema_actor, 0.3)
    perturb_(agent.target_critic, 0.5, seed=4)
    obs = torch.randn(2, 4, 3)
    before = copy.deepcopy(agent)
    got = agent.act(obs)

    acting = before.acting
    s = obs.unsqueeze(2).expand(2, 4, 50, 3)
    with torch.no_grad():
        candidates = before.actor.sample(s, acting)
        probs = F.softmax(q_min(before.target_critic, s, candidates), dim=-1)
    for k in range(2):
        picks = torch.multinomial(probs[k], 1, generator=acting.generators[k])[:, 0]
        torch.testing.assert_close(got[k], candidates[k, torch.arange(4), picks], rtol=0, atol=0)


def test_act_uses_min_of_the_target_heads_not_the_online_critic():
    agent = DQL(3, 2, make_config(), [0, 1], "cpu")
    # min(Q'_1, Q'_2) = -1e5 |a_0|: the softmax is then an argmax of -|a_0|
    agent.target_critic = HeadsCritic(lambda a: 1e5 * a[..., 0], lambda a: -1e5 * a[..., 0])
    agent.critic = HeadsCritic(lambda a: 1e5 * a[..., 0].abs(), lambda a: 1e5 * a[..., 0].abs())  # would prefer |a_0| large
    obs = torch.randn(2, 3, 3)
    before = copy.deepcopy(agent)
    got = agent.act(obs)
    with torch.no_grad():
        candidates = before.actor.sample(obs.unsqueeze(2).expand(2, 3, 50, 3), before.acting)
    best = candidates[..., 0].abs().argmin(-1)
    expected = candidates.gather(2, best[..., None, None].expand(2, 3, 1, 2)).squeeze(2)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------
# seeds, checkpoints, configs


def test_seeds_trained_together_match_a_seed_trained_alone():
    cfg = make_config(max_q_backup=True, grad_norm=0.5, ema_start=4, ema_every=2)
    group, alone = DQL(3, 2, cfg, [0, 1, 2], "cpu"), DQL(3, 2, cfg, [1], "cpu")
    train_group_and_alone(group, alone, random_transitions(), steps=10)
    for name in ("actor", "ema_actor", "critic", "target_critic"):
        for g, a in zip(getattr(group, name).parameters(), getattr(alone, name).parameters()):
            torch.testing.assert_close(g[1], a[0], rtol=1e-4, atol=1e-5)
    obs = torch.randn(1, 4, 3)
    torch.testing.assert_close(group.act(obs.expand(3, 4, 3))[1], alone.act(obs)[0], rtol=1e-4, atol=1e-5)


def test_state_dict_round_trip_continues_identically():
    cfg = make_config(ema_start=2, ema_every=1, lr_decay=True, lr_decay_every=2, lr_decay_t_max=10)
    a = DQL(3, 2, cfg, [0, 1], "cpu")
    for i in range(3):
        a.update(random_batch(2, seed=i))
    a.act(torch.randn(2, 2, 3))
    b = DQL(3, 2, cfg, [0, 1], "cpu")
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    assert b.step == 3 and b.actor_opt.param_groups[0]["lr"] == a.actor_opt.param_groups[0]["lr"]
    assert_same_update(a, b, random_batch(2, seed=9))
    obs = torch.randn(2, 5, 3)
    torch.testing.assert_close(a.act(obs), b.act(obs), rtol=0, atol=0)


def test_configs_follow_the_official_table():
    walker = resolve_config("dql", get_task("walker2d-medium-v2")).config
    assert (walker.grad_norm, walker.eta, walker.actor_lr, walker.critic_lr) == (1.0, 1.0, 3e-4, 3e-4)
    assert (walker.steps, walker.n_timesteps, walker.max_q_backup, walker.reward_transform) == (2_000_000, 5, False, "none")
    assert walker.lr_decay and walker.lr_decay_t_max == 2000 and walker.num_candidates == 50
    expected_gn = {"halfcheetah-medium-v2": 9.0, "hopper-medium-v2": 9.0, "halfcheetah-medium-replay-v2": 2.0,
                   "hopper-medium-replay-v2": 4.0, "walker2d-medium-replay-v2": 4.0, "halfcheetah-medium-expert-v2": 7.0,
                   "hopper-medium-expert-v2": 5.0, "walker2d-medium-expert-v2": 5.0, "walker2d-medium-v2": 1.0}
    assert set(expected_gn) == set(SUITES["d4rl-locomotion"])
    for name, gn in expected_gn.items():
        resolved = resolve_config("dql", get_task(name))
        assert resolved.config.grad_norm == gn and f"hyperparameters['{name}']" in resolved.sources["grad_norm"]
    play = resolve_config("dql", task_for_dataset("D4RL/antmaze/medium-play-v1"))
    assert (play.config.actor_lr, play.config.critic_lr, play.config.eta, play.config.max_q_backup) == (1e-3, 3e-4, 2.0, True)
    assert (play.config.steps, play.config.reward_transform, play.config.lr_decay_t_max) == (1_000_000, "cql_antmaze", 1000)
    assert "v0" in play.sources["eta"]
    umaze = resolve_config("dql", task_for_dataset("D4RL/antmaze/umaze-v1")).config
    assert (umaze.eta, umaze.max_q_backup, umaze.grad_norm) == (0.5, False, 2.0)
    kitchen = {d: resolve_config("dql", task_for_dataset(f"D4RL/kitchen/{d}-v2")).config for d in ("complete", "mixed")}
    assert [(c.eta, c.grad_norm, c.steps, c.reward_transform) for c in kitchen.values()] == [
        (0.005, 9.0, 250_000, "none"), (0.005, 10.0, 1_000_000, "none")]
    pen = {d: resolve_config("dql", task_for_dataset(f"D4RL/pen/{d}-v2")).config for d in ("human", "cloned")}
    assert [(c.actor_lr, c.eta, c.grad_norm, c.reward_transform) for c in pen.values()] == [
        (3e-5, 0.15, 7.0, "normalize"), (3e-5, 0.1, 8.0, "normalize")]
    minari = resolve_config("dql", get_task("mujoco/hopper/medium-v0"))  # no entry: the -v2 table's median gn
    assert minari.config.grad_norm == 5.0 and "median" in minari.sources["grad_norm"]
    for suite in SUITES.values():
        for name in suite:
            resolve_config("dql", get_task(name))
