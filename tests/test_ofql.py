"""OFQL against its equations (paper Eqs. 8-17) and DQL's update structure, on tiny inputs."""

import copy
import functools
import math

import pytest
import torch
import torch.nn.functional as F

from agent_testing import (
    assert_same_update, perturb_, q_min, random_batch, random_transitions, train_group_and_alone,
    trained_and_restored,
)
from agents.base import Batch, SeedStreams
from agents.nets import mish
from agents.ofql import (
    OFQL,
    MeanFlowPolicy,
    OFQLConfig,
    flow_bc_loss,
    meanflow_target,
    one_step_action,
    sample_time_pairs,
)
from agents.qlearning import choose_by_q
from benchmarks.config import load_agent_table, resolve_config
from benchmarks.tasks import SUITES, TASKS, task_for_dataset

OBS, ACT = 3, 2


def make_config(**changes) -> OFQLConfig:
    values = dict(
        steps=100, batch_size=8, reward_transform="none", actor_lr=3e-4, critic_lr=3e-4, discount=0.99, tau=0.005,
        eta=0.5, hidden_dim=16, time_embed_dim=8, time_embed_scale=1.0, time_mu=-0.4, time_sigma=1.0,
        flow_ratio=0.5, bc_adaptive_power=0.0, bc_adaptive_eps=1e-3, ema_decay=0.995, ema_start=1000, ema_every=5, max_q_backup=False, max_q_samples=10,
        max_grad_norm=0.0, num_candidates=50, act_with_ema=False, act_noise_scale=1.0, act_q_temperature=1.0,
    )
    values.update(changes)
    return OFQLConfig(**values)


make_batch = functools.partial(random_batch, obs_dim=OBS, act_dim=ACT)


def make_policy(n_seeds: int = 2, hidden: int = 16, time_dim: int = 8) -> MeanFlowPolicy:
    return MeanFlowPolicy(n_seeds, OBS, ACT, hidden, time_dim, 1.0).init_(SeedStreams(range(n_seeds), "test", "cpu"))


@pytest.fixture
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


# ------------------------------------------------------------------------------------------------
# the network


def test_policy_is_dqls_mlp_with_two_time_embeddings():
    policy = make_policy(hidden=256, time_dim=64)
    assert [(l.in_features, l.out_features) for l in policy.t_mlp.linears] == [(64, 128), (128, 64)]
    assert [(l.in_features, l.out_features) for l in policy.r_mlp.linears] == [(64, 128), (128, 64)]
    body = [(l.in_features, l.out_features) for l in policy.body.linears]
    assert body == [(ACT + 64 + 64 + OBS, 256), (256, 256), (256, 256), (256, ACT)]
    assert policy.body.activation is mish and policy.body.n_activated == 3
    # u depends on r (the average-velocity network is not the instantaneous one)
    s, a = torch.randn(2, 5, OBS), torch.randn(2, 5, ACT)
    t = torch.full((2, 5), 0.8)
    assert not torch.allclose(policy(a, torch.zeros(2, 5), t, s), policy(a, t, t, s))


# ------------------------------------------------------------------------------------------------
# the BC loss (Eqs. 13-15)


def test_jvp_target_matches_finite_differences(float64):
    """u_tgt = v - (t - r) (v . d_a u + d_t u): the total derivative along (a_t + h v, r, t + h)."""
    policy = make_policy()
    perturb_(policy, 0.3, seed=0)
    g = torch.Generator().manual_seed(1)
    s, a_t, v = (torch.randn(2, 6, d, generator=g) for d in (OBS, ACT, ACT))
    t = torch.rand(2, 6, generator=g) * 0.8 + 0.1
    r = t * torch.rand(2, 6, generator=g)
    u, u_tgt = meanflow_target(policy, s, a_t, r, t, v)
    h = 1e-6
    with torch.no_grad():
        forward = policy(a_t + h * v, r, t + h, s)
        backward = policy(a_t - h * v, r, t - h, s)
        dudt = (forward - backward) / (2 * h)
        torch.testing.assert_close(u, policy(a_t, r, t, s), rtol=0, atol=1e-12)
    torch.testing.assert_close(u_tgt, v - (t - r)[..., None] * dudt, rtol=1e-7, atol=1e-8)
    # the JVP really carries d_t u and v . d_a u (not zero, not the r-derivative)
    assert dudt.abs().max() > 1e-3
    with torch.no_grad():
        wrong = (policy(a_t, r + h, t, s) - policy(a_t, r - h, t, s)) / (2 * h)
    assert not torch.allclose(u_tgt, v - (t - r)[..., None] * wrong, atol=1e-4)


def test_time_derivative_equals_torch_func_jvp(float64):
    """The chain-rule tangent of forward_and_time_derivative is torch.func.jvp along (v, 0, 1), and u is the plain
    forward with the same gradient to theta."""
    policy = MeanFlowPolicy(2, OBS, ACT, 16, 8, 3.0).init_(SeedStreams([0, 1], "ofql/init", "cpu"))
    perturb_(policy, 0.3, seed=4)
    g = torch.Generator().manual_seed(5)
    s, a_t, v = (torch.randn(2, 6, d, generator=g) for d in (OBS, ACT, ACT))
    t = torch.rand(2, 6, generator=g)
    r = t * torch.rand(2, 6, generator=g)
    u, dudt = policy.forward_and_time_derivative(a_t, r, t, s, v)
    u_ref, dudt_ref = torch.func.jvp(lambda x, y, z: policy(x, y, z, s), (a_t, r, t),
                                     (v, torch.zeros_like(r), torch.ones_like(t)))
    torch.testing.assert_close(dudt, dudt_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(u, u_ref, rtol=0, atol=0)
    assert not dudt.requires_grad
    params = list(policy.parameters())
    for got, want in zip(torch.autograd.grad(u.sum(), params), torch.autograd.grad(policy(a_t, r, t, s).sum(), params)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_flow_bc_loss_equation(float64):
    """L_FBC = mean over batch and action dims of (u(a_t, r, t; s) - u_tgt)^2, a_t = (1 - t) a + t eps."""
    policy = make_policy()
    g = torch.Generator().manual_seed(2)
    s = torch.randn(2, 5, OBS, generator=g)
    a = torch.rand(2, 5, ACT, generator=g) * 2 - 1
    eps = torch.randn(2, 5, ACT, generator=g)
    t = torch.rand(2, 5, generator=g)
    r = t * torch.rand(2, 5, generator=g)
    a_t = (1 - t[..., None]) * a + t[..., None] * eps
    v = eps - a
    h = 1e-6
    with torch.no_grad():
        u = policy(a_t, r, t, s)
        dudt = (policy(a_t + h * v, r, t + h, s) - policy(a_t - h * v, r, t - h, s)) / (2 * h)
        expected = ((u - (v - (t - r)[..., None] * dudt)) ** 2).mean(dim=(1, 2))
    torch.testing.assert_close(flow_bc_loss(policy, s, a, eps, r, t), expected, rtol=1e-7, atol=1e-10)
    # MeanFlow's adaptive weighting: each sample's error d weighted by sg(1 / (d + c)^p)
    with torch.no_grad():
        d = ((u - (v - (t - r)[..., None] * dudt)) ** 2).mean(-1)
    torch.testing.assert_close(flow_bc_loss(policy, s, a, eps, r, t, 0.5, 1e-3), (d / (d + 1e-3).sqrt()).mean(-1),
                               rtol=1e-6, atol=1e-10)
    # the weight is a constant (stop-gradient): the gradient is that of mean_i w_i d_i with w_i = 1 / (d_i + c) fixed
    params = list(policy.parameters())
    grads = torch.autograd.grad(flow_bc_loss(policy, s, a, eps, r, t, 1.0, 0.01).sum(), params)
    u_live, u_tgt = meanflow_target(policy, s, a_t, r, t, v)
    weight = 1 / (d + 0.01)
    expected = torch.autograd.grad((weight * (u_live - u_tgt).square().mean(-1)).mean(-1).sum(), params)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want)


def test_r_equal_t_is_conditional_flow_matching():
    """With r = t the target is exactly v = eps - a and L_FBC is L_CFM (Eq. 9)."""
    policy = make_policy()
    s, a, eps = torch.randn(2, 7, OBS), torch.rand(2, 7, ACT) * 2 - 1, torch.randn(2, 7, ACT)
    t = torch.rand(2, 7)
    a_t = (1 - t[..., None]) * a + t[..., None] * eps
    _, u_tgt = meanflow_target(policy, s, a_t, t, t, eps - a)
    torch.testing.assert_close(u_tgt, eps - a, rtol=0, atol=0)
    with torch.no_grad():
        cfm = ((policy(a_t, t, t, s) - (eps - a)) ** 2).mean(dim=(1, 2))
    torch.testing.assert_close(flow_bc_loss(policy, s, a, eps, t, t), cfm)


def test_target_is_stop_gradient():
    """sg(u_tgt): the target carries no graph and dL/dtheta = mean(2 (u - u_tgt) du/dtheta)."""
    policy = make_policy()
    perturb_(policy, 0.3, seed=0)
    s, a, eps = torch.randn(2, 6, OBS), torch.rand(2, 6, ACT) * 2 - 1, torch.randn(2, 6, ACT)
    t = torch.rand(2, 6) * 0.9 + 0.1
    r = t * 0.3
    a_t = (1 - t[..., None]) * a + t[..., None] * eps
    u, u_tgt = meanflow_target(policy, s, a_t, r, t, eps - a)
    assert u.requires_grad and not u_tgt.requires_grad and u_tgt.grad_fn is None
    params = list(policy.parameters())
    grads = torch.autograd.grad(flow_bc_loss(policy, s, a, eps, r, t).sum(), params)
    u_plain = policy(a_t, r, t, s)  # a plain forward: the first-order term only
    surrogate = (2 * (u_plain - u_tgt).detach() * u_plain).mean(dim=(1, 2)).sum()
    expected = torch.autograd.grad(surrogate, params)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    # a target that kept its graph would give a different gradient (the test can fail)
    u_full, dudt = torch.func.jvp(lambda x, y, z: policy(x, y, z, s), (a_t, r, t),
                                  (eps - a, torch.zeros_like(r), torch.ones_like(t)))
    leaky = ((u_full - (eps - a - (t - r)[..., None] * dudt)) ** 2).mean(dim=(1, 2)).sum()
    leaky_grads = torch.autograd.grad(leaky, params)
    assert any(not torch.allclose(a_, b_, atol=1e-6) for a_, b_ in zip(leaky_grads, expected))


# ------------------------------------------------------------------------------------------------
# (t, r) sampling


def test_time_pairs_ordered_half_equal_logit_normal():
    streams = SeedStreams([0, 1], "ofql/noise", "cpu")
    b = 20_000
    r, t = sample_time_pairs(streams, b, -0.4, 1.0, 0.5)
    assert r.shape == t.shape == (2, b)
    assert bool((r <= t).all()) and bool((r > 0).all()) and bool((t < 1).all())
    equal = r == t
    assert equal.sum(-1).tolist() == [b // 2, b // 2]  # exactly the flow ratio, per seed
    assert not torch.equal(equal[0], equal[1])  # chosen at random, per seed
    # r != t half: logits of (t, r) are the max and min of two N(-0.4, 1) draws
    logit_t, logit_r = torch.logit(t[~equal]), torch.logit(r[~equal])
    assert logit_t.mean().item() == pytest.approx(-0.4 + 1 / math.sqrt(math.pi), abs=0.03)
    assert logit_r.mean().item() == pytest.approx(-0.4 - 1 / math.sqrt(math.pi), abs=0.03)
    pooled = torch.cat([logit_t, logit_r])
    assert pooled.mean().item() == pytest.approx(-0.4, abs=0.03)
    assert pooled.std().item() == pytest.approx(1.0, abs=0.03)
    # odd batch: floor(ratio * B) equal pairs; ratio 0 and 1 are the two ablations
    r, t = sample_time_pairs(streams, 7, -0.4, 1.0, 0.5)
    assert (r == t).sum(-1).tolist() == [3, 3]
    r, t = sample_time_pairs(streams, 64, -0.4, 1.0, 1.0)
    assert torch.equal(r, t)
    r, t = sample_time_pairs(streams, 64, -0.4, 1.0, 0.0)
    assert bool((r < t).all())


def test_time_pairs_per_seed_streams():
    r2, t2 = sample_time_pairs(SeedStreams([0, 1], "p", "cpu"), 32, -0.4, 1.0, 0.5)
    r1, t1 = sample_time_pairs(SeedStreams([1], "p", "cpu"), 32, -0.4, 1.0, 0.5)
    torch.testing.assert_close(r2[1], r1[0], rtol=0, atol=0)
    torch.testing.assert_close(t2[1], t1[0], rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------
# one-step action (Eq. 16)


def test_one_step_action_formula_and_clipping():
    policy = make_policy()
    s, eps = torch.randn(2, 9, OBS), torch.randn(2, 9, ACT)
    with torch.no_grad():
        u = policy(eps, torch.zeros(2, 9), torch.ones(2, 9), s)
        # float rounding only: the embeddings of r = 0, t = 1 are computed once and broadcast
        torch.testing.assert_close(one_step_action(policy, s, eps), (eps - u).clamp(-1, 1))
        policy.body.linears[-1].bias.add_(torch.tensor([3.0, -3.0]))  # push the raw actions out of the box
        raw = eps - policy(eps, torch.zeros(2, 9), torch.ones(2, 9), s)
        clipped = one_step_action(policy, s, eps)
    assert (raw.abs() > 1).any()
    assert clipped.abs().max() <= 1.0
    torch.testing.assert_close(clipped, raw.clamp(-1, 1))
    # leading dimensions of any shape (candidates, max-Q samples)
    assert one_step_action(policy, torch.randn(2, 4, 5, OBS), torch.randn(2, 4, 5, ACT)).shape == (2, 4, 5, ACT)


# ------------------------------------------------------------------------------------------------
# the update


def replay_update(before: OFQL, batch: Batch, k: int = 1):
    """The official order recomputed from a copy of the agent taken before ``update``."""
    cfg, n = before.config, batch.observations.shape[1]
    noise = copy.deepcopy(before.noise)
    with torch.no_grad():
        s_next = batch.next_observations[:, :, None].expand(-1, -1, k, -1)
        a_next = one_step_action(before.ema_actor, s_next, noise.randn(n, k, ACT))
        q1n, q2n = before.target_critic(s_next, a_next)
        target = batch.rewards + cfg.discount * (1 - batch.terminals) * torch.minimum(q1n.max(2).values, q2n.max(2).values)
    q1, q2 = before.critic(batch.observations, batch.actions)
    critic_loss = F.mse_loss(q1, target, reduction="none").mean(-1) + F.mse_loss(q2, target, reduction="none").mean(-1)
    r, t = sample_time_pairs(noise, n, cfg.time_mu, cfg.time_sigma, cfg.flow_ratio)
    eps_bc, eps_pi = noise.randn(n, ACT), noise.randn(n, ACT)
    first = noise.rand(1)[:, 0] > 0.5
    return target, critic_loss, (r, t, eps_bc, eps_pi, first)


def test_update_follows_dql_order():
    """Critic on the EMA policy's one-step a', then L_FBC + eta * normalised Q with the updated critic,
    then (EMA on schedule) and critic Polyak."""
    agent = OFQL(OBS, ACT, make_config(), [0, 1], "cpu")
    perturb_(agent.critic, seed=0)  # online critic != target, actor != EMA actor, as after training
    perturb_(agent.actor, seed=1)
    batch = make_batch(2)
    before = copy.deepcopy(agent)
    metrics = agent.update(batch)

    target, critic_loss, (r, t, eps_bc, eps_pi, first) = replay_update(before, batch)
    torch.testing.assert_close(metrics["target_q"], target.mean(-1))
    torch.testing.assert_close(metrics["critic_loss"], critic_loss.detach())
    with torch.no_grad():
        bc = flow_bc_loss(before.actor, batch.observations, batch.actions, eps_bc, r, t)
        a_new = one_step_action(before.actor, batch.observations, eps_pi)
        q1, q2 = agent.critic(batch.observations, a_new)  # the critic after its own step
        lead, other = torch.where(first[:, None], q1, q2), torch.where(first[:, None], q2, q1)
        q_loss = -lead.mean(-1) / other.abs().mean(-1)
    torch.testing.assert_close(metrics["bc_loss"], bc)
    torch.testing.assert_close(metrics["q_loss"], q_loss)
    torch.testing.assert_close(metrics["actor_loss"], bc + 0.5 * q_loss)
    for t_new, t_old, c_new in zip(agent.target_critic.parameters(), before.target_critic.parameters(),
                                   agent.critic.parameters()):
        torch.testing.assert_close(t_new, 0.995 * t_old + 0.005 * c_new)
    for e_new, e_old in zip(agent.ema_actor.parameters(), before.ema_actor.parameters()):
        torch.testing.assert_close(e_new, e_old, rtol=0, atol=0)  # no EMA before step 1000
    assert agent.step == 1


def snapshot_grads_at_step(optimizer: torch.optim.Optimizer, store: list) -> None:
    step = optimizer.step

    def wrapped(*args, **kwargs):
        store.append([p.grad.clone() for group in optimizer.param_groups for p in group["params"]])
        return step(*args, **kwargs)

    optimizer.step = wrapped


def test_gradients_flow_where_dql_sends_them():
    """Critic: TD error against a constant target. Actor: sg-target BC term plus eta * dQ/da through
    the one-step action into theta (no gradient into the critic's own update)."""
    agent = OFQL(OBS, ACT, make_config(), [0, 1], "cpu")
    perturb_(agent.critic, seed=0)
    perturb_(agent.actor, seed=1)
    batch = make_batch(2)
    before = copy.deepcopy(agent)
    critic_grads, actor_grads = [], []
    snapshot_grads_at_step(agent.critic_opt, critic_grads)
    snapshot_grads_at_step(agent.actor_opt, actor_grads)
    agent.update(batch)

    target, critic_loss, (r, t, eps_bc, eps_pi, first) = replay_update(before, batch)
    want = torch.autograd.grad(critic_loss.sum(), list(before.critic.parameters()))
    for got, w in zip(critic_grads[0], want):
        torch.testing.assert_close(got, w)
    for p, g in zip(agent.critic.parameters(), critic_grads[0]):  # the actor term left the critic's grads alone
        torch.testing.assert_close(p.grad, g, rtol=0, atol=0)

    critic_after = copy.deepcopy(agent.critic)  # the critic the actor term sees
    obs = batch.observations
    u_bc = before.actor((1 - t[..., None]) * batch.actions + t[..., None] * eps_bc, r, t, obs)
    _, u_tgt = meanflow_target(before.actor, obs, (1 - t[..., None]) * batch.actions + t[..., None] * eps_bc, r, t,
                               eps_bc - batch.actions)
    bc_surrogate = (2 * (u_bc - u_tgt).detach() * u_bc).mean(dim=(1, 2))
    a_new = (eps_pi - before.actor(eps_pi, torch.zeros(2, 8), torch.ones(2, 8), obs)).clamp(-1, 1)
    q1, q2 = critic_after(obs, a_new)
    lead, other = torch.where(first[:, None], q1, q2), torch.where(first[:, None], q2, q1)
    surrogate = bc_surrogate + 0.5 * (-lead.mean(-1) / other.abs().mean(-1).detach())
    want = torch.autograd.grad(surrogate.sum(), list(before.actor.parameters()))
    for got, w in zip(actor_grads[0], want):
        torch.testing.assert_close(got, w, rtol=1e-4, atol=1e-6)
    assert all(p.grad is None for p in agent.ema_actor.parameters())
    assert all(p.grad is None for p in agent.target_critic.parameters())


def test_critic_target_without_grad_and_one_network_call_per_action():
    agent = OFQL(OBS, ACT, make_config(), [0, 1], "cpu")
    calls = {"actor": [], "ema": [], "target": []}
    # the output layer of u_theta runs once per network evaluation (a JVP's tangent goes through SeedLinear.tangent)
    agent.actor.body.linears[-1].register_forward_hook(lambda m, i, o: calls["actor"].append(tuple(o.shape)))
    agent.ema_actor.register_forward_hook(lambda m, i, o: calls["ema"].append(torch.is_grad_enabled()))
    agent.target_critic.register_forward_hook(lambda m, i, o: calls["target"].append(torch.is_grad_enabled()))
    agent.update(make_batch(2))
    # one JVP evaluation for L_FBC and ONE evaluation for the action of the Q term (no chain, no BPTT)
    assert calls["actor"] == [(2, 8, ACT), (2, 8, ACT)]
    assert calls["ema"] == [False] and calls["target"] == [False]  # critic target built without a graph

    calls["actor"].clear()
    agent.act(torch.randn(2, 4, OBS))
    assert calls["actor"] == [(2, 4, 50, ACT)]  # 50 candidates, one batched network call


def test_max_q_backup_uses_ten_ema_samples():
    agent = OFQL(OBS, ACT, make_config(max_q_backup=True), [0, 1], "cpu")
    perturb_(agent.target_critic, seed=0)
    perturb_(agent.ema_actor, seed=3)
    calls = []
    agent.ema_actor.register_forward_hook(lambda m, i, o: calls.append(tuple(o.shape)))
    batch = make_batch(2)
    before = copy.deepcopy(agent)
    metrics = agent.update(batch)
    assert calls == [(2, 8, 10, ACT)]
    target, critic_loss, _ = replay_update(before, batch, k=10)
    torch.testing.assert_close(metrics["target_q"], target.mean(-1))
    torch.testing.assert_close(metrics["critic_loss"], critic_loss.detach())
    # the plain backup (first sample only) would differ
    plain, _, _ = replay_update(before, batch, k=1)
    assert not torch.allclose(plain, target)


def test_ema_and_polyak_schedule():
    """EMA at steps s with s % every == 0 and s >= start (s = updates done before); Polyak every step."""
    cfg = make_config(ema_start=3, ema_every=2, ema_decay=0.9, tau=0.1)
    agent = OFQL(OBS, ACT, cfg, [0], "cpu")
    batch = make_batch(1)
    ema_steps = []
    for s in range(9):
        ema_before = [p.clone() for p in agent.ema_actor.parameters()]
        target_before = [p.clone() for p in agent.target_critic.parameters()]
        agent.update(batch)
        changed = any(not torch.equal(a, b) for a, b in zip(ema_before, agent.ema_actor.parameters()))
        if changed:
            ema_steps.append(s)
            for e, e0, p in zip(agent.ema_actor.parameters(), ema_before, agent.actor.parameters()):
                torch.testing.assert_close(e, 0.9 * e0 + 0.1 * p)
        for tq, tq0, c in zip(agent.target_critic.parameters(), target_before, agent.critic.parameters()):
            torch.testing.assert_close(tq, 0.9 * tq0 + 0.1 * c)
    assert ema_steps == [4, 6, 8]


def test_gradient_clipping_is_per_seed():
    cfg = make_config(max_grad_norm=1e-3)
    group, alone = OFQL(OBS, ACT, cfg, [0, 1], "cpu"), OFQL(OBS, ACT, cfg, [1], "cpu")
    norms = []
    snapshot_grads_at_step(group.actor_opt, norms)
    batch = make_batch(2)
    metrics = group.update(batch)
    alone_metrics = alone.update(Batch(**{k: v[1:] for k, v in vars(batch).items()}))
    per_seed = torch.stack([g.reshape(2, -1).pow(2).sum(1) for g in norms[0]]).sum(0).sqrt()
    assert bool((per_seed <= 1e-3 * (1 + 1e-4)).all())
    assert bool((metrics["actor_grad_norm"] > 1e-3).all())  # clipping was active
    torch.testing.assert_close(metrics["actor_grad_norm"][1:], alone_metrics["actor_grad_norm"], rtol=1e-5, atol=0)
    for g, a in zip(group.actor.parameters(), alone.actor.parameters()):
        torch.testing.assert_close(g[1], a[0], rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------------------------
# seeds, checkpoints, inference


def test_seeds_trained_together_match_a_seed_trained_alone():
    cfg = make_config(ema_start=2, ema_every=2, max_grad_norm=1.0)
    group, alone = OFQL(OBS, ACT, cfg, [0, 1, 2], "cpu"), OFQL(OBS, ACT, cfg, [1], "cpu")
    train_group_and_alone(group, alone, random_transitions(obs_dim=OBS, act_dim=ACT), steps=10)
    for g, a in zip(group.actor.parameters(), alone.actor.parameters()):
        torch.testing.assert_close(g[1], a[0], rtol=1e-4, atol=1e-5)
    for g, a in zip(group.ema_actor.parameters(), alone.ema_actor.parameters()):
        torch.testing.assert_close(g[1], a[0], rtol=1e-4, atol=1e-5)
    obs = torch.randn(1, 4, OBS)
    torch.testing.assert_close(group.act(obs.expand(3, 4, OBS))[1], alone.act(obs)[0], rtol=1e-4, atol=1e-5)


def test_state_dict_round_trip_continues_identically():
    cfg = make_config(ema_start=1, ema_every=2)
    a, b = trained_and_restored(lambda: OFQL(OBS, ACT, cfg, [0, 1], "cpu"), steps=3, make_batch=make_batch)
    assert b.step == 3
    assert_same_update(a, b, make_batch(2, seed=9))
    obs = torch.randn(2, 5, OBS)
    torch.testing.assert_close(a.act(obs), b.act(obs), rtol=0, atol=0)


@pytest.mark.parametrize("with_ema, noise_scale, q_temperature", [(False, 1.0, 1.0), (True, 0.5, 100.0)],
                         ids=["dql", "cleandiffuser"])
def test_act_draws_one_of_50_one_step_candidates_by_softmax_q(with_ema, noise_scale, q_temperature):
    """DQL's sample_action, and CleanDiffuser's (EMA policy, noise scaled by its temperature, sharper softmax)."""
    agent = OFQL(OBS, ACT, make_config(act_with_ema=with_ema, act_noise_scale=noise_scale, act_q_temperature=q_temperature),
                 [0, 1], "cpu")
    perturb_(agent.ema_actor, 0.5, seed=4)  # EMA and online policies differ
    perturb_(agent.target_critic, 0.5, seed=5)
    obs = torch.randn(2, 6, OBS)
    streams = copy.deepcopy(agent.act_noise)
    got = agent.act(obs)
    policy = agent.ema_actor if with_ema else agent.actor
    with torch.no_grad():
        s = obs[:, :, None].expand(-1, -1, 50, -1)
        candidates = one_step_action(policy, s, noise_scale * streams.randn(6, 50, ACT))
        expected = choose_by_q(candidates, q_temperature * q_min(agent.target_critic, s, candidates), streams)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert got.shape == (2, 6, ACT) and got.abs().max() <= 1
    # the chosen action is one of the state's candidates
    assert bool(((candidates - got[:, :, None]).abs().sum(-1) == 0).any(-1).all())
    other = agent.actor if with_ema else agent.ema_actor
    with torch.no_grad():
        assert not torch.allclose(one_step_action(other, s, streams.randn(6, 50, ACT)),
                                  one_step_action(policy, s, streams.randn(6, 50, ACT)))


# ------------------------------------------------------------------------------------------------
# config


def test_config_resolves_for_every_family_and_keeps_the_eta_grid():
    for name in (*SUITES["d4rl-locomotion"], *SUITES["quickstart-all"]):
        resolve_config("ofql", TASKS[name])
    hopper = resolve_config("ofql", TASKS["hopper-medium-v2"]).config
    assert (hopper.steps, hopper.max_grad_norm, hopper.max_q_backup, hopper.reward_transform) == (
        2_000_000, 9.0, False, "none")
    assert (hopper.actor_lr, hopper.critic_lr, hopper.time_embed_dim, hopper.flow_ratio) == (3e-4, 3e-4, 64, 0.5)
    maze = resolve_config("ofql", task_for_dataset("D4RL/antmaze/medium-play-v1")).config
    assert (maze.steps, maze.max_q_backup, maze.reward_transform, maze.actor_lr, maze.max_grad_norm) == (
        1_000_000, True, "cql_antmaze", 3e-4, 2.0)
    assert resolve_config("ofql", task_for_dataset("D4RL/antmaze/umaze-v1")).config.max_q_backup is False
    grid = load_agent_table("ofql")["sweeps"]["eta"]
    assert grid["values"] == [0.001, 0.01, 0.1, 0.3, 0.5] and grid["source"]
    for family in ("mujoco", "antmaze", "kitchen"):
        assert load_agent_table("ofql")["family"][family]["eta"]["value"] in grid["values"]
