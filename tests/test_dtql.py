"""DTQL against the EDM equations and the official update's structure, on tiny inputs."""

import copy
import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from agent_testing import (
    assert_same_update, perturb_, random_batch, random_transitions, train_group_and_alone, trained_and_restored,
)
from agents.base import Batch, SeedStreams
from agents.nets import mish
from agents.dtql import (
    DTQL, DTQLConfig, GaussianTanhActor, actor_objective, denoising_loss, edm_scalings, iql_critic_loss, sample_sigma,
)
from agents.iql import expectile_loss
from agents.qlearning import choose_by_q
from benchmarks.config import resolve_config
from benchmarks.tasks import SUITES, get_task, task_for_dataset

OBS, ACT = 3, 2


def make_config(**changes) -> DTQLConfig:
    values = dict(
        steps=20, batch_size=8, reward_transform="none", pretrain_steps=5, lr=3e-4, critic_lr=3e-4, lr_decay=False,
        alpha=5.0, gamma=0.0, expectile=0.7, discount=0.99, tau=0.005, sigma_data=0.5, sigma_min=0.002,
        sigma_max=80.0, sigma_density_scale=0.5, clip_denoised=True, hidden_dim=16, score_hidden_layers=4,
        time_embed_dim=16, actor_hidden_layers=3, log_std_min=-5.0, log_std_max=2.0, num_candidates=1024,
    )
    values.update(changes)
    return DTQLConfig(**values)


make_batch = functools.partial(random_batch, obs_dim=OBS, act_dim=ACT)


def main_phase_agent(n_seeds: int = 2, **changes) -> DTQL:
    """An agent at the first main-phase step whose critic differs from its target."""
    agent = DTQL(OBS, ACT, make_config(**changes), list(range(n_seeds)), "cpu")
    agent.step = agent.config.pretrain_steps
    perturb_(agent.critic)
    return agent


def params(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def assert_same(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def assert_all_changed(a: list[torch.Tensor], module: nn.Module) -> None:
    assert all(not torch.equal(x, y) for x, y in zip(a, module.parameters(), strict=True))


# ------------------------------------------------------------------------------------------------
# EDM pieces against their formulas


def test_edm_scalings_against_the_formulas_and_their_limits():
    sd = 0.5
    sigma = torch.tensor([0.5, 1.0, 0.002, 80.0], dtype=torch.float64)
    c_skip, c_out, c_in = edm_scalings(sigma, sd)
    # sigma = sigma_data: c_skip = 1/2, c_out = sd / sqrt 2, c_in = 1 / (sd sqrt 2)
    assert c_skip[0].item() == pytest.approx(0.5)
    assert c_out[0].item() == pytest.approx(0.5 / math.sqrt(2))
    assert c_in[0].item() == pytest.approx(1 / (0.5 * math.sqrt(2)))
    # sigma = 1: 0.25 / 1.25, 0.5 / sqrt(1.25), 1 / sqrt(1.25)
    assert c_skip[1].item() == pytest.approx(0.2)
    assert c_out[1].item() == pytest.approx(0.5 / math.sqrt(1.25))
    assert c_in[1].item() == pytest.approx(1 / math.sqrt(1.25))
    # boundary: sigma -> 0 makes D the identity (c_skip -> 1, c_out -> 0), sigma -> inf ignores the input
    assert c_skip[2].item() == pytest.approx(1.0, abs=2e-5) and c_out[2].item() == pytest.approx(0.002, rel=1e-4)
    assert c_in[2].item() == pytest.approx(2.0, rel=1e-4)
    assert c_skip[3].item() == pytest.approx(0.25 / 6400.25) and c_out[3].item() == pytest.approx(0.5, rel=1e-4)
    assert c_in[3].item() == pytest.approx(1 / 80.0, rel=1e-4)
    # EDM's unit-variance conditions: Var(c_in x_sigma) = 1 and Var(a - c_skip x_sigma) = c_out^2 for Var(a) = sd^2
    torch.testing.assert_close(c_in**2 * (sd**2 + sigma**2), torch.ones_like(sigma))
    torch.testing.assert_close((1 - c_skip) ** 2 * sd**2 + c_skip**2 * sigma**2, c_out**2)


def test_sigma_sampler_support_and_truncated_log_logistic_distribution():
    streams = SeedStreams([0, 1], "sigma", "cpu")
    loc, scale, lo, hi = math.log(0.5), 0.5, 0.002, 80.0
    sigma = sample_sigma(streams, 40_000, loc, scale, lo, hi)
    assert sigma.shape == (2, 40_000) and sigma.dtype == torch.float32
    assert sigma.min().item() >= lo * (1 - 1e-6) and sigma.max().item() <= hi * (1 + 1e-6)
    # CDF of the truncated log-logistic at a few points: (F(x) - F(lo)) / (F(hi) - F(lo)), F = sigmoid((log x - loc)/s)
    cdf = lambda x: 1 / (1 + math.exp(-(math.log(x) - loc) / scale))  # noqa: E731
    for x in (0.05, 0.2, 0.5, 1.0, 3.0):
        expected = (cdf(x) - cdf(lo)) / (cdf(hi) - cdf(lo))
        for k in range(2):
            assert (sigma[k] <= x).float().mean().item() == pytest.approx(expected, abs=0.01)
    # seeds draw their own stream
    alone = sample_sigma(SeedStreams([1], "sigma", "cpu"), 40_000, loc, scale, lo, hi)
    torch.testing.assert_close(alone[0], sigma[1], rtol=0, atol=0)


def test_sigma_sampler_truncates_to_any_window():
    """A window in the far tail (about 1e-4 of the untruncated mass) still gets every sample, with the
    truncated CDF (inverse-CDF sampling, not rejection or clipping)."""
    loc, scale, lo, hi = math.log(0.5), 0.5, 20.0, 80.0
    sigma = sample_sigma(SeedStreams([3], "sigma", "cpu"), 20_000, loc, scale, lo, hi)[0]
    assert sigma.min().item() >= lo * (1 - 1e-5) and sigma.max().item() <= hi * (1 + 1e-5)
    cdf = lambda x: 1 / (1 + math.exp(-(math.log(x) - loc) / scale))  # noqa: E731
    expected = (cdf(40.0) - cdf(lo)) / (cdf(hi) - cdf(lo))
    assert (sigma <= 40.0).float().mean().item() == pytest.approx(expected, abs=0.01)


def test_denoising_loss_on_hand_numbers():
    """One seed, one sample, one action dimension, a network that outputs a constant."""
    sd, sigma_v, a, z, f_out = 0.5, 1.0, 0.3, -0.4, 0.7
    net = lambda x, s, t: torch.full_like(x, f_out)  # noqa: E731
    actions = torch.tensor([[[a]]])
    obs = torch.zeros(1, 1, 1)
    sigma = torch.tensor([[sigma_v]])
    noise = torch.tensor([[[z]]])
    x_noisy = a + sigma_v * z  # -0.1
    c_skip, c_out = 0.25 / 1.25, 0.5 / math.sqrt(1.25)
    denoised = c_skip * x_noisy + c_out * f_out
    expected = ((denoised - a) / c_out) ** 2
    got = denoising_loss(net, actions, obs, sigma, noise, sd, clip=True)
    assert got.item() == pytest.approx(expected, rel=1e-4)
    # clamping: a network output that pushes D above 1 is clamped to 1 inside the loss
    net_big = lambda x, s, t: torch.full_like(x, 100.0)  # noqa: E731
    got = denoising_loss(net_big, actions, obs, sigma, noise, sd, clip=True)
    assert got.item() == pytest.approx(((1.0 - a) / c_out) ** 2, rel=1e-4)
    # without clamping it is the code's form mean((F - (a - c_skip x) / c_out)^2)
    got = denoising_loss(net_big, actions, obs, sigma, noise, sd, clip=False)
    assert got.item() == pytest.approx((100.0 - (a - c_skip * x_noisy) / c_out) ** 2, rel=1e-4)


def official_score_network(agent: DTQL, k: int) -> tuple[nn.Module, nn.Module]:
    """Seed ``k``'s BC network rebuilt as the official ``ScoreNetwork`` layers (torch ``nn.Linear``)."""

    def linear(layer) -> nn.Linear:
        out = nn.Linear(layer.in_features, layer.out_features)
        with torch.no_grad():
            out.weight.copy_(layer.weight[k].T)
            out.bias.copy_(layer.bias[k, 0])
        return out

    bc = agent.bc
    embed = nn.Sequential(linear(bc.embed.linears[0]), nn.Mish(), linear(bc.embed.linears[1]))
    # MLPNetwork(num_hidden_layers=4): Linear(in, h), then 3 x [Linear(h, h), Mish], then Linear(h, out)
    rest = [linear(l) for l in bc.rest.linears]
    mlp = nn.Sequential(linear(bc.first), rest[0], nn.Mish(), rest[1], nn.Mish(), rest[2], nn.Mish(), rest[3])
    return embed, mlp


def official_diffusion_loss(embed, mlp, x, cond, sigma, noise, sd=0.5):
    """``DiffusionModel.diffusion_loss`` with ``clip_denoised=True`` for one seed (``SinusoidalPosEmb(16)``)."""
    x_1 = x + noise * sigma[:, None]
    c_skip = (sd**2 / (sigma**2 + sd**2))[:, None]
    c_out = (sigma * sd / (sigma**2 + sd**2) ** 0.5)[:, None]
    c_in = (1 / (sigma**2 + sd**2) ** 0.5)[:, None]
    t = (torch.log(sigma) / 4)[:, None]
    freqs = torch.exp(torch.arange(8) * -(math.log(10000) / 7))
    emb = t[:, None] * freqs[None, :]
    emb = embed(torch.cat((emb.sin(), emb.cos()), dim=-1)).squeeze(1)
    out = mlp(torch.cat([x_1 * c_in, cond, emb], dim=-1))
    denoised = (c_out * out + c_skip * x_1).clamp(-1, 1)
    return ((denoised - x) / c_out).pow(2).mean()


def test_bc_loss_matches_the_official_score_network_and_loss():
    agent = DTQL(OBS, ACT, make_config(), [0, 1], "cpu")
    batch = make_batch(2, batch=32)
    sigma = sample_sigma(SeedStreams([0, 1], "s", "cpu"), 32, math.log(0.5), 0.5, 0.002, 80.0)
    noise = torch.randn(2, 32, ACT)
    got = denoising_loss(agent.bc, batch.actions, batch.observations, sigma, noise, 0.5, clip=True)
    for k in range(2):
        embed, mlp = official_score_network(agent, k)
        expected = official_diffusion_loss(embed, mlp, batch.actions[k], batch.observations[k], sigma[k], noise[k])
        torch.testing.assert_close(got[k], expected, rtol=1e-5, atol=1e-6)
    # the first Linear of MLPNetwork has no activation: two Linears in a row
    assert len(agent.bc.rest.linears) == 4 and agent.bc.rest.n_activated == 3


# ------------------------------------------------------------------------------------------------
# one-step policy, actor objective and critic


def test_one_step_policy_is_a_tanh_squashed_gaussian():
    actor = GaussianTanhActor(2, OBS, ACT, 16, 3, -5.0, 2.0).init_(SeedStreams([0, 1], "init", "cpu"))
    assert len(actor.net.linears) == 4 and actor.net.activation is F.relu
    w = actor.net.linears[1].weight[0]
    torch.testing.assert_close(w.T @ w, torch.eye(16), atol=1e-5, rtol=0)  # orthogonal, gain 1
    assert all(torch.count_nonzero(l.bias) == 0 for l in actor.net.linears)
    with torch.no_grad():
        actor.net.linears[-1].bias[:, :, ACT:] = torch.tensor([[[-9.0, 0.3]], [[5.0, -0.2]]])  # log-std clamps
    obs = torch.randn(2, 5, OBS)
    eps = torch.randn(2, 5, ACT)
    mu, log_std = actor.net(obs).chunk(2, dim=-1)
    std = log_std.clamp(-5.0, 2.0).exp()
    dist = torch.distributions.Normal(mu, std)
    torch.testing.assert_close(actor.sample(obs, eps), torch.tanh(mu + std * eps))
    data = torch.rand(2, 5, ACT) * 2 - 1
    data[0, 0, 0] = 1.0  # a data action on the boundary stays finite (atanh(a / 1.001))
    expected = dist.log_prob(torch.atanh(data / 1.001)).sum(-1)
    torch.testing.assert_close(actor.log_prob(obs, data), expected)


def test_actor_objective_on_hand_numbers():
    tr = torch.tensor([0.5, 2.0])
    q = torch.tensor([[1.0, 3.0], [-2.0, 0.0]])
    nlp = torch.tensor([[4.0, 2.0], [1.0, 1.0]])
    got = actor_objective(tr, q, nlp, alpha=5.0, gamma=1.0)
    torch.testing.assert_close(got, torch.tensor([5 * 0.5 - 2.0 + 3.0, 5 * 2.0 + 1.0 + 1.0]))
    torch.testing.assert_close(actor_objective(tr, q, nlp, 5.0, 0.0), torch.tensor([0.5, 11.0]))


def test_iql_critic_targets_use_the_current_critic_without_gradient():
    agent = main_phase_agent()
    batch = make_batch(2)
    losses = iql_critic_loss(agent.critic, batch, 0.99, 0.7)
    c = agent.critic
    with torch.no_grad():
        q1, q2 = c.q(batch.observations, batch.actions)
        v = c.v(batch.observations).squeeze(-1)
        y = batch.rewards + 0.99 * (1 - batch.terminals) * c.v(batch.next_observations).squeeze(-1)
    value_loss = expectile_loss(torch.minimum(q1, q2) - v, 0.7).mean(-1)
    q_loss = F.mse_loss(q1, y, reduction="none").mean(-1) + F.mse_loss(q2, y, reduction="none").mean(-1)
    torch.testing.assert_close(losses["value_loss"], value_loss)
    torch.testing.assert_close(losses["critic_loss"], value_loss + q_loss)
    # the value loss moves only V; the Q loss moves only Q (its target V(s') carries no gradient)
    v_params, q_params = list(c.v.parameters()), list(c.q.parameters())
    grads = torch.autograd.grad(losses["value_loss"].sum(), q_params, allow_unused=True)
    assert all(g is None or torch.count_nonzero(g) == 0 for g in grads)
    grads = torch.autograd.grad(losses["q_loss"].sum(), v_params, allow_unused=True)
    assert all(g is None or torch.count_nonzero(g) == 0 for g in grads)


def test_critic_architecture_q_with_layer_norm_v_without():
    agent = DTQL(OBS, ACT, make_config(), [0], "cpu")
    q1, v = agent.critic.q.q1, agent.critic.v
    assert [l.out_features for l in q1.linears] == [16, 16, 16, 1] and q1.norms is not None and len(q1.norms) == 3
    assert q1.activation is mish and v.activation is mish
    assert [l.out_features for l in v.linears] == [16, 16, 16, 1] and v.norms is None


# ------------------------------------------------------------------------------------------------
# the update against the official structure


def draw_like_update(agent: DTQL, batch: Batch):
    """The noise the main-phase update draws, in its order: BC sigma, BC z, actor eps, TR sigma, TR z."""
    streams, cfg = agent.noise, agent.config
    b = batch.actions.shape[1]
    sig = lambda: sample_sigma(streams, b, math.log(0.5), 0.5, cfg.sigma_min, cfg.sigma_max)  # noqa: E731
    bc_sigma, bc_noise = sig(), streams.randn(b, ACT)
    eps = streams.randn(b, ACT)
    tr_sigma, tr_noise = sig(), streams.randn(b, ACT)
    return bc_sigma, bc_noise, eps, tr_sigma, tr_noise


@pytest.mark.parametrize("gamma", [0.0, 1.0])
def test_main_update_follows_the_official_order(gamma):
    """Critic step; BC step; actor step against the *updated* critic and BC net; Polyak of Q'."""
    agent = main_phase_agent(gamma=gamma)
    perturb_(agent.bc, seed=2)
    batch = make_batch(2)
    before = copy.deepcopy(agent)
    metrics = agent.update(batch)
    bc_sigma, bc_noise, eps, tr_sigma, tr_noise = draw_like_update(before, batch)
    obs, act = batch.observations, batch.actions
    with torch.no_grad():
        critic = iql_critic_loss(before.critic, batch, 0.99, 0.7)
        bc_loss = denoising_loss(before.bc, act, obs, bc_sigma, bc_noise, 0.5, True)
        new_actions = before.actor.sample(obs, eps)
        tr = denoising_loss(agent.bc, new_actions, obs, tr_sigma, tr_noise, 0.5, True)  # BC net after its step
        q = agent.critic.q_min(obs, new_actions)  # critic after its step
        nlp = -before.actor.log_prob(obs, act)
        actor_loss = 5.0 * tr - q.mean(-1) + gamma * nlp.mean(-1)
    torch.testing.assert_close(metrics["critic_loss"], critic["critic_loss"])
    torch.testing.assert_close(metrics["bc_loss"], bc_loss)
    torch.testing.assert_close(metrics["trust_region_loss"], tr)
    torch.testing.assert_close(metrics["ql_loss"], -q.mean(-1))
    torch.testing.assert_close(metrics["actor_loss"], actor_loss)
    torch.testing.assert_close(metrics["neg_log_prob"], nlp.mean(-1) if gamma else torch.zeros(2))
    for t_new, t_old, c_new in zip(agent.critic_target.parameters(), before.critic_target.parameters(),
                                   agent.critic.parameters()):
        torch.testing.assert_close(t_new, 0.995 * t_old + 0.005 * c_new)
    assert agent.step == before.step + 1
    # the actor's gradient is that of the whole objective, through D_phi and Q into a_theta
    new_actions = before.actor.sample(obs, eps)
    tr = denoising_loss(agent.bc, new_actions, obs, tr_sigma, tr_noise, 0.5, True)
    nlp = -before.actor.log_prob(obs, act) if gamma else torch.zeros(2, 8)
    loss = actor_objective(tr, agent.critic.q_min(obs, new_actions), nlp, 5.0, gamma)
    grads = torch.autograd.grad(loss.sum(), list(before.actor.parameters()))
    for p, g in zip(agent.actor.parameters(), grads, strict=True):
        torch.testing.assert_close(p.grad, g)


def test_trust_region_gradient_reaches_the_actor_but_not_the_denoiser_or_critic():
    agent = main_phase_agent()
    batch = make_batch(2)
    # the trust-region term alone has a gradient on the one-step actor, through D_phi
    new_actions = agent.actor.sample(batch.observations, torch.randn(2, 8, ACT))
    sigma = torch.full((2, 8), 0.5)
    tr = denoising_loss(agent.bc, new_actions, batch.observations, sigma, torch.randn(2, 8, ACT), 0.5, True)
    grads = torch.autograd.grad(tr.sum(), list(agent.actor.parameters()))
    assert all(torch.count_nonzero(g) > 0 for g in grads[:-1])
    # an actor step changes the actor, and neither the BC denoiser nor the critic, nor their gradients
    bc, critic, actor = params(agent.bc), params(agent.critic), params(agent.actor)
    agent._actor_step(batch)
    assert_same(bc, params(agent.bc))
    assert_same(critic, params(agent.critic))
    assert all(p.grad is None for p in agent.bc.parameters()) and all(p.grad is None for p in agent.critic.parameters())
    assert_all_changed(actor, agent.actor)


def test_denoiser_moves_exactly_by_its_own_bc_step():
    """After a full main update the BC net equals one Adam step on L_BC alone (L_TR leaks nothing)."""
    agent = main_phase_agent()
    batch = make_batch(2)
    before = copy.deepcopy(agent)
    bc_before = params(agent.bc)
    agent.update(batch)
    assert_all_changed(bc_before, agent.bc)  # the BC loss trains the denoiser
    bc_sigma, bc_noise, *_ = draw_like_update(before, batch)
    loss = denoising_loss(before.bc, batch.actions, batch.observations, bc_sigma, bc_noise, 0.5, True)
    before.bc_opt.zero_grad()
    loss.sum().backward()
    before.bc_opt.step()
    for a, b in zip(agent.bc.parameters(), before.bc.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_pretraining_moves_bc_and_critic_only():
    cfg = make_config(pretrain_steps=4, steps=10, lr_decay=True)
    agent = DTQL(OBS, ACT, cfg, [0, 1], "cpu")
    actor, target, bc, critic = params(agent.actor), params(agent.critic_target), params(agent.bc), params(agent.critic)
    before = copy.deepcopy(agent)
    batch = make_batch(2)
    for i in range(4):
        assert agent.pretraining
        metrics = agent.update(make_batch(2, seed=i))
        assert set(metrics) == {"bc_loss", "critic_loss", "value_loss", "q", "v"}
    assert not agent.pretraining and agent.step == 4
    assert_same(actor, params(agent.actor))  # the one-step actor does not train during pre-training
    assert_same(target, params(agent.critic_target))  # no Polyak update in DTQL.pretrain
    assert_all_changed(bc, agent.bc)
    assert_all_changed(critic, agent.critic)
    for opt in (agent.actor_opt, agent.bc_opt, agent.critic_opt):  # LR schedules start with the main phase
        assert opt.param_groups[0]["lr"] == 3e-4
    # a pre-training step: BC step first (its draws come first), then the critic step
    m = before.update(batch)
    fresh = copy.deepcopy(DTQL(OBS, ACT, cfg, [0, 1], "cpu"))
    sig = sample_sigma(fresh.noise, 8, math.log(0.5), 0.5, 0.002, 80.0)
    with torch.no_grad():
        expected = denoising_loss(fresh.bc, batch.actions, batch.observations, sig, fresh.noise.randn(8, ACT), 0.5, True)
    torch.testing.assert_close(m["bc_loss"], expected)
    # the first main-phase step trains the actor
    agent.update(batch)
    assert_all_changed(actor, agent.actor)


def test_cosine_lr_decay_over_the_main_phase_on_all_three_optimisers():
    cfg = make_config(pretrain_steps=3, steps=13, lr=1e-4, lr_decay=True)
    agent = DTQL(OBS, ACT, cfg, [0], "cpu")
    batch = make_batch(1)
    for _ in range(3):
        agent.update(batch)
    for n in range(1, 11):
        agent.update(batch)
        factor = 0.5 * (1 + math.cos(math.pi * n / 10))
        assert agent.actor_opt.param_groups[0]["lr"] == pytest.approx(1e-4 * factor, abs=1e-12)
        assert agent.bc_opt.param_groups[0]["lr"] == pytest.approx(1e-4 * factor, abs=1e-12)
        assert agent.critic_opt.param_groups[0]["lr"] == pytest.approx(3e-4 * factor, abs=1e-12)
    constant = DTQL(OBS, ACT, make_config(pretrain_steps=0, steps=5), [0], "cpu")
    for _ in range(5):
        constant.update(batch)
    assert constant.actor_opt.param_groups[0]["lr"] == 3e-4 and constant.critic_opt.param_groups[0]["lr"] == 3e-4


def test_target_critic_starts_equal_and_takes_no_gradient():
    agent = DTQL(OBS, ACT, make_config(), [0, 1], "cpu")
    for t, c in zip(agent.critic_target.parameters(), agent.critic.parameters()):
        torch.testing.assert_close(t, c, rtol=0, atol=0)
        assert not t.requires_grad


def test_bad_pretrain_steps_rejected():
    with pytest.raises(ValueError, match="pretrain_steps"):
        make_config(pretrain_steps=20, steps=20)


# ------------------------------------------------------------------------------------------------
# inference


def test_act_draws_1024_candidates_and_picks_by_target_q():
    agent = main_phase_agent()
    obs = torch.randn(2, 3, OBS)
    before = copy.deepcopy(agent)
    out = agent.act(obs)
    assert out.shape == (2, 3, ACT) and out.abs().max() <= 1
    with torch.no_grad():
        rep = obs.unsqueeze(2).expand(-1, -1, 1024, -1)
        candidates = before.actor.sample(rep, before.act_noise.randn(3, 1024, ACT))
        expected = choose_by_q(candidates, before.critic_target.q_min(rep, candidates), before.act_noise)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    # with a steep target Q the softmax is an argmax over the target critic's candidates, not the online one's
    with torch.no_grad():
        for head in (agent.critic_target.q.q1, agent.critic_target.q.q2):
            head.linears[-1].weight.mul_(1e4)
        before = copy.deepcopy(agent)
        out = agent.act(obs)
        candidates = before.actor.sample(rep, before.act_noise.randn(3, 1024, ACT))
        q_target = before.critic_target.q_min(rep, candidates)
        q_chosen = before.critic_target.q_min(obs, out)
        q_online = before.critic.q_min(rep, candidates)
    # the chosen action is (up to softmax ties) the target critic's best candidate ...
    spread = q_target.max(-1).values - q_target.min(-1).values
    assert torch.all(q_target.max(-1).values - q_chosen <= 1e-3 * spread)
    # ... which is not the online critic's best
    best = q_target.argmax(-1)
    assert not torch.equal(best, q_online.argmax(-1))


# ------------------------------------------------------------------------------------------------
# seeds and checkpoints


def test_seeds_trained_together_match_a_seed_trained_alone():
    cfg = make_config(pretrain_steps=5, steps=12, lr_decay=True)
    group, alone = DTQL(OBS, ACT, cfg, [0, 1, 2], "cpu"), DTQL(OBS, ACT, cfg, [1], "cpu")
    data = random_transitions(obs_dim=OBS, act_dim=ACT)
    gm, am = train_group_and_alone(group, alone, data, steps=12)  # across the end of pre-training
    for key in am:
        torch.testing.assert_close(gm[key][1], am[key][0], rtol=1e-4, atol=1e-5)
    for module in ("actor", "bc", "critic", "critic_target"):
        for g, a in zip(getattr(group, module).parameters(), getattr(alone, module).parameters()):
            torch.testing.assert_close(g[1], a[0], rtol=1e-4, atol=1e-5)
    obs = torch.randn(1, 4, OBS)
    torch.testing.assert_close(group.act(obs.expand(3, 4, OBS))[1], alone.act(obs)[0], rtol=1e-4, atol=1e-5)


def test_state_dict_round_trip_continues_identically():
    cfg = make_config(pretrain_steps=2, steps=10, lr_decay=True, gamma=1.0)
    a, b = trained_and_restored(lambda: DTQL(OBS, ACT, cfg, [0, 1], "cpu"), steps=4, make_batch=make_batch)
    assert b.step == 4
    assert_same_update(a, b, make_batch(2, seed=9))
    assert a.actor_opt.param_groups[0]["lr"] == b.actor_opt.param_groups[0]["lr"] < 3e-4
    obs = torch.randn(2, 2, OBS)
    torch.testing.assert_close(a.act(obs), b.act(obs), rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------
# configs


def test_configs_resolve_for_every_locomotion_and_antmaze_task():
    expected = {  # main.py offline_hyperparameters: (lr, alpha, lr_decay)
        "halfcheetah-medium-v2": (3e-4, 1.0, False), "halfcheetah-medium-replay-v2": (3e-4, 5.0, False),
        "halfcheetah-medium-expert-v2": (3e-4, 50.0, False), "hopper-medium-v2": (1e-4, 5.0, True),
        "hopper-medium-replay-v2": (3e-4, 5.0, False), "hopper-medium-expert-v2": (3e-4, 20.0, False),
        "walker2d-medium-v2": (3e-4, 5.0, True), "walker2d-medium-replay-v2": (3e-4, 5.0, True),
        "walker2d-medium-expert-v2": (3e-4, 5.0, True),
    }
    assert set(SUITES["d4rl-locomotion"]) == set(expected)
    for name, (lr, alpha, decay) in expected.items():
        cfg = resolve_config("dtql", get_task(name)).config
        assert (cfg.lr, cfg.alpha, cfg.lr_decay) == (lr, alpha, decay)
        assert (cfg.steps, cfg.pretrain_steps, cfg.batch_size, cfg.gamma, cfg.expectile) == (1_050_000, 50_000, 256, 0.0, 0.7)
        assert cfg.reward_transform == "none" and cfg.num_candidates == 1024 and cfg.critic_lr == 3e-4
    antmaze = {"umaze": (550_000, 3e-4, 1.0, False), "umaze-diverse": (550_000, 3e-5, 1.0, True),
               "medium-play": (450_000, 3e-4, 1.0, False), "large-diverse": (350_000, 3e-4, 0.5, False)}
    for maze, (steps, lr, alpha, decay) in antmaze.items():
        cfg = resolve_config("dtql", task_for_dataset(f"D4RL/antmaze/{maze}-v1")).config
        assert (cfg.steps, cfg.lr, cfg.alpha, cfg.lr_decay) == (steps, lr, alpha, decay)
        assert (cfg.batch_size, cfg.gamma, cfg.expectile, cfg.reward_transform) == (2048, 1.0, 0.9, "iql_antmaze")
    quick = resolve_config("dtql", get_task("quickstart/reacher/mixed-v0")).config
    assert quick.pretrain_steps / quick.steps == pytest.approx(50_000 / 1_050_000, abs=0.005)  # official proportion
