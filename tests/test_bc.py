"""BC: its loss, its Adam step and its action against a plain ``torch.nn`` rebuild of each seed's policy
(``tanh(MLP(s))``, ``F.mse_loss``, ``torch.optim.Adam``), seeds independent, and checkpoints continuing."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from agent_testing import assert_same_update, random_batch, random_transitions, train_group_and_alone, trained_and_restored
from agents.bc import BC, BCConfig

OBS, ACT = 3, 2


def make_config(**changes) -> BCConfig:
    values = dict(steps=20, batch_size=8, reward_transform="none", lr=1e-3, hidden_dims=(16, 16))
    values.update(changes)
    return BCConfig(**values)


def seed_policy(agent: BC, seed: int) -> nn.Sequential:
    """Seed ``seed``'s MLP as ``nn.Linear`` layers with ReLU between them (weights copied, transposed)."""
    layers = []
    for linear in agent.policy.linears:
        layer = nn.Linear(linear.in_features, linear.out_features)
        with torch.no_grad():
            layer.weight.copy_(linear.weight[seed].T)
            layer.bias.copy_(linear.bias[seed, 0])
        layers += [layer, nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def test_loss_step_and_action_match_a_plain_rebuild():
    agent = BC(OBS, ACT, make_config(), [0, 1], "cpu")
    batch = random_batch(2, obs_dim=OBS, act_dim=ACT)
    policies = [seed_policy(agent, k) for k in range(2)]
    losses = []
    for k, policy in enumerate(policies):
        optimizer = torch.optim.Adam(policy.parameters(), lr=1e-3)
        loss = F.mse_loss(torch.tanh(policy(batch.observations[k])), batch.actions[k])
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    metrics = agent.update(batch)
    torch.testing.assert_close(metrics["bc_loss"], torch.stack(losses), rtol=1e-6, atol=1e-7)
    for k, policy in enumerate(policies):
        for linear, layer in zip(agent.policy.linears, policy[::2]):
            torch.testing.assert_close(linear.weight[k].T, layer.weight, rtol=1e-5, atol=1e-7)
            torch.testing.assert_close(linear.bias[k, 0], layer.bias, rtol=1e-5, atol=1e-7)
    observations = torch.randn(2, 5, OBS)
    actions = agent.act(observations)
    with torch.no_grad():
        for k, policy in enumerate(policies):
            torch.testing.assert_close(actions[k], torch.tanh(policy(observations[k])), rtol=1e-5, atol=1e-6)
    assert actions.abs().max() < 1


def test_seed_trained_in_a_group_equals_it_alone():
    group, alone = BC(OBS, ACT, make_config(), [0, 1, 2], "cpu"), BC(OBS, ACT, make_config(), [1], "cpu")
    group_metrics, alone_metrics = train_group_and_alone(group, alone, random_transitions(), steps=10)
    torch.testing.assert_close(group_metrics["bc_loss"][1:2], alone_metrics["bc_loss"], rtol=1e-5, atol=1e-7)
    for g, a in zip(group.policy.parameters(), alone.policy.parameters()):
        torch.testing.assert_close(g[1], a[0], rtol=1e-5, atol=1e-7)


def test_state_dict_round_trip_continues_identically():
    trained, restored = trained_and_restored(lambda: BC(OBS, ACT, make_config(), [0, 1], "cpu"), steps=3)
    assert restored.step == 3
    assert_same_update(trained, restored, random_batch(2, seed=7))
