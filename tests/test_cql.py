"""CQL against its equations and the official trainer's structure, on tiny inputs."""

import copy
import functools
import math

import pytest
import torch
from torch.distributions import Normal

from agent_testing import assert_same_update, perturb_, random_batch, train_group_and_alone
from agents.base import Batch, SeedStreams, Transitions
from agents.cql import (
    CQL,
    CQLConfig,
    alpha_loss,
    alpha_loss_gradient,
    atanh_clipped,
    backup_value,
    bc_log_prob,
    cql_gap,
    cql_logsumexp,
    cql_penalties,
    sample_tanh_gaussian,
    tanh_gaussian_log_prob,
)

OBS, ACT, N_ACTIONS = 3, 2, 10


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These networks are tiny: one intra-op thread avoids thread contention on a shared CPU (restored after)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_config(**changes) -> CQLConfig:
    values = dict(
        steps=100, batch_size=8, reward_transform="none", policy_lr=1e-3, qf_lr=3e-4,
        actor_hidden_dims=(16, 16, 16), critic_hidden_dims=(16, 16, 16), critic2_hidden_dims=(16, 16, 16),
        discount=0.99, tau=5e-3, init_scheme="corl", log_std_min=-20.0, log_std_max=2.0, n_actions=N_ACTIONS,
        cql_temp=1.0, min_q_weight=10.0, importance_sample=True, lagrange=False, target_action_gap=-1.0,
        log_alpha_prime_init=1.0, clip_diff_min=-math.inf, clip_diff_max=math.inf, target_backup="sample",
        bc_steps=0, normalize_states=False,
    )
    values.update(changes)
    return CQLConfig(**values)


make_batch = functools.partial(random_batch, obs_dim=OBS, act_dim=ACT, action_bound=0.9)  # actions in [-0.9, 0.9)


def reference_log_prob(pre_tanh, mean, std):
    """log N(z; mean, std) - log(1 - tanh(z)^2), summed, in float64 (the textbook change of variables)."""
    z, mean, std = pre_tanh.double(), mean.double(), std.double()
    return (Normal(mean, std).log_prob(z) - torch.log1p(-torch.tanh(z) ** 2)).sum(-1)


# ---------------------------------------------------------------------------------------------
# the policy's densities


def test_tanh_gaussian_log_prob_is_the_change_of_variables():
    g = torch.Generator().manual_seed(0)
    mean, log_std = torch.randn(2, 5, 3, generator=g), torch.randn(2, 5, 3, generator=g) * 0.5
    z = mean + log_std.exp() * torch.randn(2, 5, 3, generator=g)
    expected = reference_log_prob(z, mean, log_std.exp())
    torch.testing.assert_close(tanh_gaussian_log_prob(z, mean, log_std).double(), expected, rtol=1e-5, atol=1e-5)
    # stable where 1 - tanh(z)^2 underflows: the correction is 2 (log 2 - |z|) asymptotically
    big = torch.tensor([[30.0]])
    got = tanh_gaussian_log_prob(big, torch.zeros(1, 1), torch.zeros(1, 1))
    assert torch.isfinite(got).all()
    expected_big = -0.5 * 900 - 0.5 * math.log(2 * math.pi) - 2 * (math.log(2) - 30.0)
    assert got.item() == pytest.approx(expected_big, rel=1e-5)


def test_samples_are_reparameterised_tanh_gaussians():
    mean, log_std = torch.randn(2, 4, 3), torch.randn(2, 4, 3) * 0.3
    noise = torch.randn(2, 4, 5, 3)
    actions, log_prob = sample_tanh_gaussian(mean, log_std, noise)
    z = mean.unsqueeze(2) + log_std.exp().unsqueeze(2) * noise
    torch.testing.assert_close(actions, torch.tanh(z))
    expected = reference_log_prob(z, mean.unsqueeze(2), log_std.exp().unsqueeze(2))
    torch.testing.assert_close(log_prob.double(), expected, rtol=1e-5, atol=1e-4)
    assert actions.shape == (2, 4, 5, 3) and log_prob.shape == (2, 4, 5)


def test_bc_log_prob_scores_dataset_actions_with_clipped_atanh():
    mean, log_std = torch.tensor([[[0.3, -12.0]]]), torch.tensor([[[-0.5, 0.2]]])
    actions = torch.tensor([[[0.5, -0.25]]])
    # official log_prob: atanh(a) under N(clamp(mean, -9, 9), std), minus log(1 - a^2)
    expected = reference_log_prob(torch.atanh(actions), mean.clamp(-9, 9), log_std.exp())
    torch.testing.assert_close(bc_log_prob(mean, log_std, actions).double(), expected, rtol=1e-5, atol=1e-5)
    # dataset actions on the boundary stay finite: 1 +- a clamped at 1e-6 (rlkit atanh)
    edge = atanh_clipped(torch.tensor([1.0, -1.0, 0.0]))
    assert edge[0].item() == pytest.approx(0.5 * math.log(2.0 / 1e-6), rel=1e-5)
    assert edge[1].item() == pytest.approx(-0.5 * math.log(2.0 / 1e-6), rel=1e-5)
    assert edge[2].item() == 0.0
    assert torch.isfinite(bc_log_prob(mean, log_std, torch.tensor([[[1.0, -1.0]]]))).all()


# ---------------------------------------------------------------------------------------------
# the losses


def test_cql_logsumexp_hand_computed_with_importance_weights():
    # all Q = 0 and log pi = 0, |A| = 1: X = [log 2] * 10 + [0] * 20, so lse = log(10 * 2 + 20) = log 40
    zeros = torch.zeros(1, 1, N_ACTIONS)
    lse = cql_logsumexp(torch.zeros(1, 1), zeros, zeros, zeros, zeros, zeros, act_dim=1, temp=1.0, importance_sample=True)
    assert lse.item() == pytest.approx(math.log(40.0), rel=1e-6)
    # |A| = 3: each uniform term is weighted by 1 / 0.5^3 = 8
    lse = cql_logsumexp(torch.zeros(1, 1), zeros, zeros, zeros, zeros, zeros, act_dim=3, temp=1.0, importance_sample=True)
    assert lse.item() == pytest.approx(math.log(10 * 8 + 20), rel=1e-6)
    # the data action's Q is not in the importance-sampled set
    lse2 = cql_logsumexp(torch.full((1, 1), 100.0), zeros, zeros, zeros, zeros, zeros, act_dim=3, temp=1.0, importance_sample=True)
    assert lse2.item() == pytest.approx(lse.item())


def test_cql_logsumexp_against_a_loop_over_the_30_terms():
    g = torch.Generator().manual_seed(3)
    S, B, n, A, T = 2, 3, N_ACTIONS, 4, 0.7
    q_data = torch.randn(S, B, generator=g)
    q_rand, q_next, q_curr = (torch.randn(S, B, n, generator=g) for _ in range(3))
    lp_next, lp_curr = torch.randn(S, B, n, generator=g), torch.randn(S, B, n, generator=g)
    got = cql_logsumexp(q_data, q_rand, q_next, q_curr, lp_next, lp_curr, act_dim=A, temp=T, importance_sample=True)
    got_rho = cql_logsumexp(q_data, q_rand, q_next, q_curr, lp_next, lp_curr, act_dim=A, temp=T, importance_sample=False)
    for s in range(S):
        for b in range(B):
            terms = [float(q_rand[s, b, j]) - A * math.log(0.5) for j in range(n)]
            terms += [float(q_next[s, b, j] - lp_next[s, b, j]) for j in range(n)]
            terms += [float(q_curr[s, b, j] - lp_curr[s, b, j]) for j in range(n)]
            assert len(terms) == 30
            expected = T * math.log(sum(math.exp(t / T) for t in terms))
            assert got[s, b].item() == pytest.approx(expected, rel=1e-5)
            # CQL(rho), min_q_version 2: raw Q of the 30 actions and the data action
            raw = [float(x) for x in (*q_rand[s, b], q_data[s, b], *q_next[s, b], *q_curr[s, b])]
            assert len(raw) == 31
            assert got_rho[s, b].item() == pytest.approx(T * math.log(sum(math.exp(t / T) for t in raw)), rel=1e-5)


def test_cql_gap_is_mean_logsumexp_minus_mean_data_q_and_clips_per_state():
    lse = torch.tensor([[3.0, 1.0, -500.0]])
    q = torch.tensor([[1.0, 2.0, 0.0]])
    # unclipped: official logsumexp.mean() - q_pred.mean()
    assert cql_gap(lse, q, -math.inf, math.inf).item() == pytest.approx((3 + 1 - 500) / 3 - 1.0)
    # CORL AntMaze: each state's difference clipped at -200 before the mean
    assert cql_gap(lse, q, -200.0, math.inf).item() == pytest.approx((2.0 - 1.0 - 200.0) / 3)


def test_fixed_weight_penalty_and_lagrange_terms():
    gap1, gap2 = torch.tensor([2.0, 0.1]), torch.tensor([1.0, 0.3])
    log_ap = torch.tensor([0.5, -1.0], requires_grad=True)
    p1, p2, loss, ap = cql_penalties(gap1, gap2, 5.0, False, log_ap, 0.8)
    torch.testing.assert_close(p1, 5.0 * gap1)
    torch.testing.assert_close(p2, 5.0 * gap2)
    assert loss.abs().sum() == 0 and ap.abs().sum() == 0

    p1, p2, loss, ap = cql_penalties(gap1, gap2, 5.0, True, log_ap, 0.8)
    alpha_prime = log_ap.detach().exp()
    torch.testing.assert_close(ap, alpha_prime)
    torch.testing.assert_close(p1, alpha_prime * 5.0 * (gap1 - 0.8))
    torch.testing.assert_close(p2, alpha_prime * 5.0 * (gap2 - 0.8))
    torch.testing.assert_close(loss, -0.5 * alpha_prime * 5.0 * ((gap1 - 0.8) + (gap2 - 0.8)))
    (grad,) = torch.autograd.grad(loss.sum(), log_ap)
    # gap above target (seed 0): descending the loss raises alpha'; below (seed 1): lowers it
    assert grad[0] < 0 < grad[1]
    # the critics' terms carry no gradient to alpha' (they use its value from before its step)
    assert not p1.requires_grad
    # alpha' is clamped to [0, 1e6]
    _, _, _, ap_big = cql_penalties(gap1, gap2, 5.0, True, torch.tensor([20.0, 0.0]), 0.8)
    assert ap_big[0].item() == 1e6


def test_alpha_loss_formula():
    log_alpha = torch.tensor([0.2, -0.4], requires_grad=True)
    log_pi = torch.tensor([[1.0, -3.0, 0.5], [0.0, 0.0, 2.0]], requires_grad=True)
    loss = alpha_loss(log_alpha, log_pi, target_entropy=-2.0)
    expected = -(log_alpha[:, None] * (log_pi + -2.0)).mean(-1)
    torch.testing.assert_close(loss, expected)
    loss.sum().backward()
    assert log_pi.grad is None or log_pi.grad.abs().sum() == 0  # log pi detached
    torch.testing.assert_close(log_alpha.grad, -(log_pi.detach() - 2.0).mean(-1))
    # the closed form the update sets instead of a backward pass
    torch.testing.assert_close(alpha_loss_gradient(log_pi, -2.0), log_alpha.grad)


def test_backup_values():
    q1 = torch.tensor([[[1.0, 5.0, 2.0]]])
    q2 = torch.tensor([[[3.0, 0.0, 2.5]]])
    assert backup_value(q1, q2, "min_of_max").item() == 3.0  # min(max q1 = 5, max q2 = 3)
    assert backup_value(q1, q2, "max_of_min").item() == 2.0  # max(min = [1, 0, 2])
    assert backup_value(q1[..., :1], q2[..., :1], "sample").item() == 1.0


# ---------------------------------------------------------------------------------------------
# the update against the official trainer's structure


def reference_update(before: CQL, batch: Batch, noise_state, cfg: CQLConfig, alpha=None) -> dict:
    """One CQL step recomputed independently from the pre-update agent and the same noise.

    The temperature's new value is closed-form on a fresh optimiser's first step; later steps pass ``alpha``.
    """
    noise = SeedStreams(before.seeds, "cql/noise", "cpu")
    noise.load_state_dict(noise_state)
    obs, nxt, act = batch.observations, batch.next_observations, batch.actions
    S, B = obs.shape[:2]
    n, k = cfg.n_actions, (1 if cfg.target_backup == "sample" else cfg.n_actions)
    eps_s, eps_next = noise.randn(B, 1 + n, ACT), noise.randn(B, k + n, ACT)
    uniform = noise.rand(B, n, ACT) * 2 - 1

    actor = copy.deepcopy(before.actor)
    critic = copy.deepcopy(before.critic)
    mean_s, log_std_s = actor(obs, cfg.log_std_min, cfg.log_std_max)
    mean_n, log_std_n = actor(nxt, cfg.log_std_min, cfg.log_std_max)

    def draw(mean, log_std, eps):
        z = mean.unsqueeze(2) + log_std.exp().unsqueeze(2) * eps
        return torch.tanh(z), reference_log_prob(z, mean.unsqueeze(2), log_std.exp().unsqueeze(2)).float()

    a_pi, log_pi = draw(mean_s, log_std_s, eps_s[:, :, :1])
    a_pi, log_pi = a_pi[:, :, 0], log_pi[:, :, 0]
    # temperature: first Adam step moves log_alpha by -lr * g / (|g| + eps)
    g_alpha = -(log_pi.detach() - ACT).mean(-1)  # target entropy -|A|
    log_alpha_new = before.temperatures.log_alpha.detach() - cfg.policy_lr * g_alpha / (g_alpha.abs() + 1e-8)
    alpha = log_alpha_new.exp() if alpha is None else alpha
    if before.step < cfg.bc_steps:
        objective = reference_log_prob(atanh_clipped(act), mean_s.clamp(-9, 9), log_std_s.exp()).float()
    else:
        objective = torch.minimum(*critic(obs, a_pi))
    policy_loss = (alpha[:, None] * log_pi - objective).mean(-1)
    actor_grads = torch.autograd.grad(policy_loss.sum(), list(actor.parameters()), allow_unused=True)

    with torch.no_grad():  # everything the critics need, from the policy before its step
        a_next, _ = draw(mean_n, log_std_n, eps_next[:, :, :k])
        a_cql_next, lp_next = draw(mean_n, log_std_n, eps_next[:, :, k:])
        a_cql_curr, lp_curr = draw(mean_s, log_std_s, eps_s[:, :, 1:])
        tq1, tq2 = before.target_critic(nxt.unsqueeze(2).expand(-1, -1, k, -1), a_next)
        if cfg.target_backup == "min_of_max":
            v = torch.minimum(tq1.max(-1).values, tq2.max(-1).values)
        else:
            v = torch.minimum(tq1, tq2).max(-1).values
        y = batch.rewards + cfg.discount * (1 - batch.terminals) * v

    def q_at(head, actions):
        return head(torch.cat([obs.unsqueeze(2).expand(-1, -1, actions.shape[2], -1), actions], -1)).squeeze(-1)

    alpha_prime = before.temperatures.log_alpha_prime.detach().exp().clamp(0, 1e6)
    critic_loss, gaps = 0.0, []
    for head in (critic.q1, critic.q2):
        q_data = head(torch.cat([obs, act], -1)).squeeze(-1)
        cat = torch.cat(
            [q_at(head, uniform) - ACT * math.log(0.5), q_at(head, a_cql_next) - lp_next, q_at(head, a_cql_curr) - lp_curr], -1
        )
        gap = (cfg.cql_temp * torch.logsumexp(cat / cfg.cql_temp, -1) - q_data).clamp(cfg.clip_diff_min, cfg.clip_diff_max).mean(-1)
        gaps.append(gap.detach())
        penalty = alpha_prime * cfg.min_q_weight * (gap - cfg.target_action_gap) if cfg.lagrange else cfg.min_q_weight * gap
        critic_loss = critic_loss + ((q_data - y) ** 2).mean(-1) + penalty
    critic_grads = torch.autograd.grad(critic_loss.sum(), list(critic.parameters()))
    return dict(
        log_alpha=log_alpha_new, alpha=alpha, policy_loss=policy_loss.detach(), critic_loss=critic_loss.detach(),
        gaps=gaps, actor_grads=actor_grads, critic_grads=critic_grads, target_v=v, alpha_prime=alpha_prime,
    )


def first_adam_step(param, grad, lr):
    return param - lr * grad / (grad.abs() + 1e-8)


@pytest.mark.parametrize("target_backup", ["sample", "max_of_min", "min_of_max"])
def test_update_follows_the_official_structure(target_backup):
    """Temperature, then the policy through the critics before their step with the new alpha, then the
    critics with every action from the policy before its step (targets from pi(.|s') on the target
    critics), then Polyak: each network moves by one Adam step on exactly its own loss."""
    cfg = make_config(target_backup=target_backup)
    agent = CQL(OBS, ACT, cfg, [0, 1], "cpu")
    perturb_(agent.actor, 0.2, seed=1)
    perturb_(agent.critic, 0.3, seed=2)
    perturb_(agent.target_critic, 0.3, seed=3)
    batch = make_batch(2)
    before = copy.deepcopy(agent)
    ref = reference_update(before, batch, agent.noise.state_dict(), cfg)
    metrics = agent.update(batch)

    torch.testing.assert_close(agent.temperatures.log_alpha.detach(), ref["log_alpha"])
    torch.testing.assert_close(metrics["alpha"], ref["alpha"])
    torch.testing.assert_close(metrics["policy_loss"], ref["policy_loss"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(metrics["qf1_loss"] + metrics["qf2_loss"] + metrics["cql_penalty"], ref["critic_loss"], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(metrics["cql_gap1"], ref["gaps"][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(metrics["target_q"], ref["target_v"].mean(-1), rtol=1e-5, atol=1e-5)
    # each optimiser stepped on exactly its own loss's gradient (no stray policy-loss gradient in the
    # critics, no critic-loss gradient in the actor through the CQL actions)
    for new, old, grad in zip(agent.actor.parameters(), before.actor.parameters(), ref["actor_grads"]):
        torch.testing.assert_close(new.grad, grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(new, first_adam_step(old, grad, cfg.policy_lr), rtol=1e-4, atol=1e-6)
    for new, old, grad in zip(agent.critic.parameters(), before.critic.parameters(), ref["critic_grads"]):
        torch.testing.assert_close(new.grad, grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(new, first_adam_step(old, grad, cfg.qf_lr), rtol=1e-4, atol=1e-6)
    for t_new, t_old, c_new in zip(agent.target_critic.parameters(), before.target_critic.parameters(), agent.critic.parameters()):
        torch.testing.assert_close(t_new, (1 - cfg.tau) * t_old + cfg.tau * c_new)
    # Lagrange off: alpha' untouched
    torch.testing.assert_close(agent.temperatures.log_alpha_prime, before.temperatures.log_alpha_prime, rtol=0, atol=0)
    assert agent.step == 1


def test_bc_warm_up_switches_to_the_q_objective_at_bc_steps():
    """Steps 0 and 1 (bc_steps = 2) train on alpha log pi - log pi(a_data|s), later steps on
    alpha log pi - min Q (official: BC while the incremented counter < policy_eval_start)."""
    cfg = make_config(bc_steps=2)
    agent = CQL(OBS, ACT, cfg, [0], "cpu")
    perturb_(agent.critic, 0.3)
    for step in range(4):
        batch = make_batch(1, seed=step)
        before, noise_state = copy.deepcopy(agent), agent.noise.state_dict()
        metrics = agent.update(batch)
        bc_cfg, q_cfg = make_config(bc_steps=10), make_config(bc_steps=0)
        bc = reference_update(before, batch, noise_state, bc_cfg, alpha=metrics["alpha"])["policy_loss"]
        q = reference_update(before, batch, noise_state, q_cfg, alpha=metrics["alpha"])["policy_loss"]
        assert not torch.allclose(bc, q, atol=1e-3)  # the metric pins which objective ran
        torch.testing.assert_close(metrics["policy_loss"], bc if step < 2 else q, rtol=1e-5, atol=1e-5)


def test_lagrange_switch_moves_alpha_prime_and_uses_its_old_value():
    cfg = make_config(lagrange=True, min_q_weight=5.0, target_action_gap=-50.0, log_alpha_prime_init=0.3)
    agent = CQL(OBS, ACT, cfg, [0, 1], "cpu")
    perturb_(agent.critic, 0.3)
    batch = make_batch(2)
    before = copy.deepcopy(agent)
    ref = reference_update(before, batch, agent.noise.state_dict(), cfg)
    metrics = agent.update(batch)
    # critics used alpha' = exp(0.3) from before its step
    torch.testing.assert_close(metrics["alpha_prime"], torch.full((2,), math.exp(0.3)))
    torch.testing.assert_close(metrics["qf1_loss"] + metrics["qf2_loss"] + metrics["cql_penalty"], ref["critic_loss"], rtol=1e-5, atol=1e-4)
    for new, old, grad in zip(agent.critic.parameters(), before.critic.parameters(), ref["critic_grads"]):
        torch.testing.assert_close(new.grad, grad, rtol=1e-4, atol=1e-6)
    # gap far above the target -50: alpha' grows by one Adam step of qf_lr
    torch.testing.assert_close(agent.temperatures.log_alpha_prime.detach(), torch.full((2,), 0.3 + cfg.qf_lr))
    # and with the target far above the gap it shrinks
    agent2 = CQL(OBS, ACT, make_config(lagrange=True, target_action_gap=1e3, log_alpha_prime_init=0.3), [0], "cpu")
    agent2.update(make_batch(1))
    assert agent2.temperatures.log_alpha_prime.item() == pytest.approx(0.3 - 3e-4)
    # without the switch: fixed weight, alpha' neither used nor trained
    agent3 = CQL(OBS, ACT, make_config(lagrange=False, log_alpha_prime_init=0.3), [0], "cpu")
    m3 = agent3.update(make_batch(1))
    assert agent3.temperatures.log_alpha_prime.item() == pytest.approx(0.3)
    torch.testing.assert_close(m3["cql_penalty"], 10.0 * (m3["cql_gap1"] + m3["cql_gap2"]))


def test_entropy_temperature_update_direction_and_value():
    """log_alpha descends -mean[log_alpha (log pi + H)]: it grows while the entropy -log pi is below
    the target -|A| (a narrow policy) and shrinks while above."""
    for log_std, grows in ((-3.0, True), (0.0, False)):
        agent = CQL(OBS, ACT, make_config(log_std_min=-20.0), [0], "cpu")
        with torch.no_grad():
            agent.actor.log_std_offset.fill_(log_std)
        m = agent.update(make_batch(1))
        moved = agent.temperatures.log_alpha.item()
        assert (moved > 0) == grows
        assert abs(moved) == pytest.approx(1e-3, rel=1e-3)  # one Adam step of policy_lr
        assert m["alpha"].item() == pytest.approx(math.exp(moved))  # the policy loss used the new alpha


# ---------------------------------------------------------------------------------------------
# networks, data handling, acting


def test_networks_and_initialisation():
    cfg = make_config(critic_hidden_dims=(16,) * 5, critic2_hidden_dims=(16,) * 3)
    agent = CQL(OBS, ACT, cfg, [0, 1], "cpu")
    # CORL AntMaze quirk reproduced: critic_1 5 hidden layers, critic_2 3
    assert len(agent.critic.q1.linears) == 6 and len(agent.critic.q2.linears) == 4
    for t, c in zip(agent.target_critic.parameters(), agent.critic.parameters()):
        torch.testing.assert_close(t, c, rtol=0, atol=0)
        assert not t.requires_grad
    # CORL: orthogonal(sqrt 2) hidden critic kernels with zero biases, orthogonal(1e-2) output
    w = agent.critic.q1.linears[1].weight[0]
    torch.testing.assert_close(w.T @ w, 2.0 * torch.eye(16), atol=1e-5, rtol=0)
    assert agent.critic.q1.linears[1].bias.abs().sum() == 0
    assert agent.critic.q1.linears[-1].weight.abs().max() <= 1e-2 + 1e-6
    # CORL actor: xavier(1e-2) head, zero bias, log_std = 1 * raw - 1
    assert agent.actor.head.weight.abs().max() <= 1e-2 * math.sqrt(6 / (16 + 2 * ACT))
    assert agent.actor.head.bias.abs().sum() == 0
    assert agent.actor.log_std_multiplier.flatten().tolist() == [1.0, 1.0]
    assert agent.actor.log_std_offset.flatten().tolist() == [-1.0, -1.0]
    # seeds start from different weights
    assert not torch.allclose(agent.critic.q1.linears[0].weight[0], agent.critic.q1.linears[0].weight[1])

    rl = CQL(OBS, ACT, make_config(init_scheme="rlkit"), [0], "cpu")
    assert rl.actor.log_std_multiplier is None
    for layer in (*rl.critic.q1.linears[:-1], *rl.actor.trunk.linears):
        torch.testing.assert_close(layer.bias, torch.full_like(layer.bias, 0.1))
        assert layer.weight.abs().max() <= 1 / math.sqrt(layer.out_features)  # rlkit's fanin uses size[0] = out
    assert rl.critic.q1.linears[-1].weight.abs().max() <= 3e-3 and rl.critic.q1.linears[-1].bias.abs().max() <= 3e-3
    assert rl.actor.head.weight.abs().max() <= 1e-3 and rl.actor.head.bias.abs().max() <= 1e-3
    with pytest.raises(ValueError, match="init_scheme must be one of 'corl', 'rlkit', got 'xavier'"):
        make_config(init_scheme="xavier")
    with pytest.raises(ValueError, match="target_backup must be one of"):
        make_config(target_backup="max")


def make_data(n: int = 64) -> Transitions:
    g = torch.Generator().manual_seed(5)
    return Transitions(
        observations=torch.randn(n, OBS, generator=g) * torch.tensor([1.0, 5.0, 0.1]) + 3.0,
        actions=torch.rand(n, ACT, generator=g) * 2 - 1, rewards=torch.rand(n, generator=g),
        next_observations=torch.randn(n, OBS, generator=g), terminals=(torch.rand(n, generator=g) < 0.1).float(),
        episode_index=torch.arange(n) // 8,
    )


def test_preprocess_rewards_and_state_normalisation():
    data = make_data()
    antmaze = CQL(OBS, ACT, make_config(reward_transform="corl_antmaze"), [0], "cpu").preprocess(data)
    torch.testing.assert_close(antmaze.rewards, data.rewards * 10 - 5)  # CORL: r * 10 - 5
    torch.testing.assert_close(antmaze.observations, data.observations)  # normalize_states off

    agent = CQL(OBS, ACT, make_config(normalize_states=True), [0], "cpu")
    out = agent.preprocess(data)
    mean = data.observations.mean(0)
    std = data.observations.std(0, unbiased=False) + 1e-3  # numpy std + eps
    torch.testing.assert_close(out.observations, (data.observations - mean) / std)
    torch.testing.assert_close(out.next_observations, (data.next_observations - mean) / std)
    torch.testing.assert_close(out.rewards, data.rewards)
    # act sees raw observations and normalises them with the dataset statistics
    raw = torch.randn(1, 4, OBS)
    mu, _ = agent.actor((raw - mean) / std, -20.0, 2.0)
    torch.testing.assert_close(agent.act(raw), torch.tanh(mu))


def test_act_is_the_deterministic_tanh_mean():
    agent = CQL(OBS, ACT, make_config(), [0, 1], "cpu")
    perturb_(agent.actor, 1.0)
    obs = torch.randn(2, 6, OBS)
    out = agent.act(obs)
    mean = agent.actor.head(agent.actor.trunk(obs))[..., :ACT]
    torch.testing.assert_close(out, torch.tanh(mean))
    torch.testing.assert_close(agent.act(obs), out, rtol=0, atol=0)  # no sampling
    assert out.abs().max() <= 1.0 and out.shape == (2, 6, ACT)


# ---------------------------------------------------------------------------------------------
# seeds and checkpoints


def test_seeds_trained_together_match_a_seed_trained_alone():
    cfg = make_config(lagrange=True, target_action_gap=1.0)
    group, alone = CQL(OBS, ACT, cfg, [0, 1, 2], "cpu"), CQL(OBS, ACT, cfg, [1], "cpu")
    data = make_data()
    mg, ma = train_group_and_alone(group, alone, data, steps=10)
    for key in ("policy_loss", "qf1_loss", "cql_gap2", "alpha", "alpha_prime"):
        torch.testing.assert_close(mg[key][1], ma[key][0], rtol=1e-4, atol=1e-5)
    for g, a in zip(group.actor.parameters(), alone.actor.parameters()):
        torch.testing.assert_close(g[1], a[0], rtol=1e-4, atol=1e-5)
    for g, a in zip(group.critic.parameters(), alone.critic.parameters()):
        torch.testing.assert_close(g[1], a[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(group.temperatures.log_alpha_prime[1], alone.temperatures.log_alpha_prime[0])
    obs = torch.randn(1, 4, OBS)
    torch.testing.assert_close(group.act(obs.expand(3, 4, OBS))[1], alone.act(obs)[0], rtol=1e-4, atol=1e-5)


def test_state_dict_round_trip_continues_identically():
    cfg = make_config(lagrange=True, target_action_gap=1.0, normalize_states=True, bc_steps=2)
    a = CQL(OBS, ACT, cfg, [0, 1], "cpu")
    data = a.preprocess(make_data())
    for i in range(3):
        a.update(make_batch(2, seed=i))
    b = CQL(OBS, ACT, cfg, [0, 1], "cpu")
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    assert b.step == 3
    torch.testing.assert_close(b.state_norm.mean, a.state_norm.mean, rtol=0, atol=0)
    torch.testing.assert_close(b.temperatures.log_alpha, a.temperatures.log_alpha, rtol=0, atol=0)
    assert_same_update(a, b, data.gather(torch.arange(16).reshape(2, 8)))
    obs = torch.randn(2, 3, OBS)
    torch.testing.assert_close(a.act(obs), b.act(obs), rtol=0, atol=0)
