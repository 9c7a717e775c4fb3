"""IQL against its equations and the official update's structure, on tiny inputs."""

import copy
import math

import pytest
import torch

from agent_testing import (
    assert_same_update, random_batch, random_transitions, train_group_and_alone, trained_and_restored,
)
from agents.base import Transitions
from agents.iql import IQL, IQLConfig, expectile_loss


def make_config(**changes) -> IQLConfig:
    values = dict(
        steps=100, batch_size=8, reward_transform="iql_locomotion", actor_lr=3e-4, value_lr=3e-4, critic_lr=3e-4,
        hidden_dims=(16, 16), discount=0.99, tau=0.005, expectile=0.7, temperature=3.0, max_weight=100.0,
        actor_dropout=0.0, actor_lr_schedule="cosine", log_std_min=-5.0, log_std_max=2.0, action_clip_eps=1e-5,
    )
    values.update(changes)
    return IQLConfig(**values)


def test_expectile_loss_equation():
    diff = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0])
    expected = torch.tensor([0.3 * 4.0, 0.3 * 0.25, 0.0, 0.7 * 0.25, 0.7 * 9.0])
    torch.testing.assert_close(expectile_loss(diff, 0.7), expected)
    # tau = 0.5 is half the squared error; tau -> 1 ignores negative residuals
    torch.testing.assert_close(expectile_loss(diff, 0.5), 0.5 * diff**2)
    assert expectile_loss(torch.tensor([-1.0]), 1.0).item() == 0.0


def test_policy_log_prob_is_a_diagonal_gaussian_around_tanh_mean():
    agent = IQL(3, 2, make_config(), [0, 1], "cpu")
    obs = torch.randn(2, 5, 3)
    actions = torch.rand(2, 5, 2) * 2 - 1
    with torch.no_grad():
        agent.actor.log_std.copy_(torch.tensor([[[-7.0, 0.3]], [[0.1, 3.0]]]))  # both clamps exercised
        mean = torch.tanh(agent.actor.mean(agent.actor.trunk(obs)))
        std = agent.actor.log_std.clamp(-5.0, 2.0).exp()
        expected = torch.distributions.Normal(mean, std).log_prob(actions).sum(-1)
        got = agent.actor.log_prob(obs, actions, -5.0, 2.0)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(agent.act(obs), mean)


def test_rewards_scaled_by_return_range_and_actions_clipped():
    agent = IQL(1, 1, make_config(), [0], "cpu")
    data = Transitions(
        observations=torch.zeros(5, 1),
        actions=torch.tensor([[-1.0], [1.0], [0.5], [1.0], [-0.2]]),
        rewards=torch.tensor([1.0, 2.0, 10.0, 0.5, 0.5]),
        next_observations=torch.zeros(5, 1),
        terminals=torch.zeros(5),
        episode_index=torch.tensor([0, 0, 1, 2, 2]),
    )
    out = agent.preprocess(data)
    # episode returns 3, 10, 1 -> scale 1000 / (10 - 1)
    torch.testing.assert_close(out.rewards, data.rewards * 1000.0 / 9.0)
    assert out.actions.max().item() == pytest.approx(1 - 1e-5)
    assert out.actions.min().item() == pytest.approx(-(1 - 1e-5))


def test_update_follows_the_official_order():
    """Value on the target critic, then AWR with the new V, then TD to the new V, then Polyak."""
    torch.manual_seed(0)
    cfg = make_config()
    agent = IQL(3, 2, cfg, [0, 1], "cpu")
    with torch.no_grad():  # make the online critic differ from its target, as after training
        for p in agent.critic.parameters():
            p.add_(0.1 * torch.randn_like(p))
    batch = random_batch(2)
    before = copy.deepcopy(agent)
    metrics = agent.update(batch)

    obs, act = batch.observations, batch.actions
    with torch.no_grad():
        target_q = torch.minimum(*before.target_critic(obs, act))
        v_old = before.value(obs).squeeze(-1)
        value_loss = expectile_loss(target_q - v_old, 0.7).mean(-1)
        v_new = agent.value(obs).squeeze(-1)  # the value after its own step
        weights = torch.exp(3.0 * (target_q - v_new)).clamp(max=100.0)
        log_prob = before.actor.log_prob(obs, act, -5.0, 2.0)
        actor_loss = -(weights * log_prob).mean(-1)
        td = batch.rewards + 0.99 * (1 - batch.terminals) * agent.value(batch.next_observations).squeeze(-1)
        q1, q2 = before.critic(obs, act)
        critic_loss = ((q1 - td) ** 2 + (q2 - td) ** 2).mean(-1)
    torch.testing.assert_close(metrics["value_loss"], value_loss)
    torch.testing.assert_close(metrics["actor_loss"], actor_loss)
    torch.testing.assert_close(metrics["critic_loss"], critic_loss)
    for t_new, t_old, c_new in zip(agent.target_critic.parameters(), before.target_critic.parameters(), agent.critic.parameters()):
        torch.testing.assert_close(t_new, 0.995 * t_old + 0.005 * c_new)
    assert agent.step == 1


def test_awr_weights_are_clipped_at_100():
    agent = IQL(3, 2, make_config(temperature=1e4), [0], "cpu")
    with torch.no_grad():
        agent.value.linears[-1].bias.fill_(-1e3)  # huge advantages
    metrics = agent.update(random_batch(1))
    assert metrics["awr_weight"].item() == pytest.approx(100.0)


def test_actor_learning_rate_follows_the_cosine_decay():
    cfg = make_config(steps=10)
    agent = IQL(3, 2, cfg, [0], "cpu")
    batch = random_batch(1)
    for n in range(1, 11):
        agent.update(batch)
        expected = 3e-4 * 0.5 * (1 + math.cos(math.pi * n / 10))
        assert agent.actor_opt.param_groups[0]["lr"] == pytest.approx(expected)
        assert agent.critic_opt.param_groups[0]["lr"] == 3e-4


def test_targets_start_equal_to_the_critic():
    agent = IQL(3, 2, make_config(), [0, 1], "cpu")
    for t, c in zip(agent.target_critic.parameters(), agent.critic.parameters()):
        torch.testing.assert_close(t, c, rtol=0, atol=0)
        assert not t.requires_grad


def test_seeds_trained_together_match_a_seed_trained_alone():
    cfg = make_config()
    group, alone = IQL(3, 2, cfg, [0, 1, 2], "cpu"), IQL(3, 2, cfg, [1], "cpu")
    train_group_and_alone(group, alone, random_transitions(), steps=20)
    for g, a in zip(group.actor.parameters(), alone.actor.parameters()):
        torch.testing.assert_close(g[1], a[0], rtol=1e-4, atol=1e-5)
    obs = torch.randn(1, 4, 3)
    torch.testing.assert_close(group.act(obs.expand(3, 4, 3))[1], alone.act(obs)[0], rtol=1e-4, atol=1e-5)


def test_state_dict_round_trip_continues_identically():
    cfg = make_config(actor_dropout=0.1)
    a, b = trained_and_restored(lambda: IQL(3, 2, cfg, [0, 1], "cpu"), steps=3)
    assert b.step == 3
    assert_same_update(a, b, random_batch(2, seed=9))
