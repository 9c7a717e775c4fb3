"""The seed-vectorised network kit against its one-seed equivalents."""

import copy

import pytest
import torch
import torch.nn.functional as F

from agents.base import SeedStreams, Transitions, derive_seed
from agents.nets import (LOGISTIC_MISH_MIN_SIZE, SeedLayerNorm, SeedLinear, SeedMLP, clip_grad_norm_per_seed_, mish,
                         mish_with_tangent, orthogonal, polyak_, torch_default)


def test_seed_linear_is_one_linear_per_seed():
    layer = SeedLinear(3, 5, 4)
    torch.nn.init.normal_(layer.weight)
    torch.nn.init.normal_(layer.bias)
    x = torch.randn(3, 7, 2, 5)  # extra leading dims after the seed dimension
    y = layer(x)
    assert y.shape == (3, 7, 2, 4)
    for k in range(3):
        expected = F.linear(x[k], layer.weight[k].T, layer.bias[k, 0])
        torch.testing.assert_close(y[k], expected)


def test_seed_layer_norm_matches_layer_norm_per_seed():
    norm = SeedLayerNorm(2, 6)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = torch.randn(2, 9, 6)
    for k in range(2):
        expected = F.layer_norm(x[k], (6,), norm.weight[k, 0], norm.bias[k, 0])
        torch.testing.assert_close(norm(x)[k], expected)
        # one seed alone takes the fused path: the same numbers
        alone = SeedLayerNorm(1, 6)
        alone.load_state_dict({"weight": norm.weight[k : k + 1], "bias": norm.bias[k : k + 1]})
        torch.testing.assert_close(alone(x[k : k + 1])[0], expected)


def test_initialisation_depends_only_on_the_seed():
    group = SeedMLP(3, (4, 8, 2)).init_(SeedStreams([0, 1, 2], "init", "cpu"), orthogonal(2**0.5))
    alone = SeedMLP(1, (4, 8, 2)).init_(SeedStreams([1], "init", "cpu"), orthogonal(2**0.5))
    for g, a in zip(group.parameters(), alone.parameters()):
        torch.testing.assert_close(g[1], a[0], rtol=0, atol=0)
    assert not torch.equal(group.linears[0].weight[0], group.linears[0].weight[1])


def test_orthogonal_init_gives_orthogonal_kernels_with_gain():
    layer = SeedMLP(2, (16, 8)).init_(SeedStreams([3, 4], "init", "cpu"), orthogonal(1.5)).linears[0]
    for k in range(2):
        w = layer.weight[k]  # [in=16, out=8]: 8 orthonormal columns scaled by the gain
        torch.testing.assert_close(w.T @ w, 1.5**2 * torch.eye(8), atol=1e-5, rtol=0)
        assert torch.count_nonzero(layer.bias[k]) == 0


def test_torch_default_init_bounds():
    layer = SeedMLP(2, (100, 50)).init_(SeedStreams([0, 1], "init", "cpu"), torch_default, bias="torch_default").linears[0]
    assert layer.weight.abs().max() <= 0.1 and layer.bias.abs().max() <= 0.1
    assert layer.weight.abs().max() > 0.09  # uses the whole U(-1/sqrt(in), 1/sqrt(in)) range


def test_seed_streams_draw_per_seed():
    group = SeedStreams([0, 5, 9], "noise", "cpu")
    alone = SeedStreams([5], "noise", "cpu")
    torch.testing.assert_close(group.randn(4, 3)[1], alone.randn(4, 3)[0], rtol=0, atol=0)
    torch.testing.assert_close(group.randint(100, 7)[1], alone.randint(100, 7)[0], rtol=0, atol=0)
    state = group.state_dict()
    first = group.rand(5)
    group.load_state_dict(state)
    torch.testing.assert_close(group.rand(5), first, rtol=0, atol=0)
    assert derive_seed(5, "noise") != derive_seed(5, "init") != derive_seed(6, "init")


def test_per_seed_grad_clipping_matches_torch_for_each_seed_alone():
    torch.manual_seed(0)
    mlp = SeedMLP(3, (4, 16, 2)).init_(SeedStreams([0, 1, 2], "init", "cpu"), torch_default)
    x = torch.randn(3, 32, 4)
    scale = torch.tensor([100.0, 1.0, 0.001]).view(3, 1, 1)  # seed 0 clipped, seeds 1, 2 untouched
    (mlp(x) * scale).square().mean(dim=(1, 2)).sum().backward()
    raw = [p.grad.clone() for p in mlp.parameters()]
    norms = clip_grad_norm_per_seed_(list(mlp.parameters()), max_norm=1.0)
    for k in range(3):
        seed_grads = [g[k].clone() for g in raw]
        params = [torch.nn.Parameter(torch.zeros_like(g)) for g in seed_grads]
        for p, g in zip(params, seed_grads):
            p.grad = g
        expected_norm = torch.nn.utils.clip_grad_norm_(params, max_norm=1.0)
        torch.testing.assert_close(norms[k], expected_norm)
        for p, clipped in zip(params, mlp.parameters()):
            torch.testing.assert_close(clipped.grad[k], p.grad)
    assert norms[0] > 1.0 and norms[2] < 1.0
    for g, p in zip(raw, mlp.parameters()):
        torch.testing.assert_close(p.grad[2], g[2], rtol=0, atol=0)

    for p, g in zip(mlp.parameters(), raw):  # max_norm <= 0: the same norms, the gradients left as they are
        p.grad = g.clone()
    torch.testing.assert_close(clip_grad_norm_per_seed_(list(mlp.parameters()), max_norm=0.0), norms)
    for g, p in zip(raw, mlp.parameters()):
        torch.testing.assert_close(p.grad, g, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mish_through_the_logistic_is_pytorchs_mish(dtype):
    """The CPU's Mish (value, gradient, tangent, forward mode) = F.mish and its backward kernel to float rounding,
    from -100 (where mish(x) is subnormal in float32 and the logistic flushes it to 0) to 100 (where e^x would
    overflow a naive formula); below LOGISTIC_MISH_MIN_SIZE elements it is F.mish itself."""
    x = torch.cat([torch.linspace(-100, 100, 20001, dtype=dtype), torch.randn(1000, dtype=dtype)])
    assert x.numel() >= LOGISTIC_MISH_MIN_SIZE
    g = torch.randn_like(x)
    exact = F.mish(x.double())
    scale = exact.abs().clamp(min=1e-30)  # relative error, absolute below 1e-30
    ours, reference = mish(x), F.mish(x)
    # in float32 no further from the float64 value than PyTorch's own kernel; in float64 within a few rounding steps
    reference_error = ((reference.double() - exact).abs() / scale).max()
    assert ((ours.double() - exact).abs() / scale).max() <= max(2 * reference_error, 8 * torch.finfo(dtype).eps)
    torch.testing.assert_close(ours, reference)
    with torch.no_grad():  # the same passes without the autograd function
        torch.testing.assert_close(mish(x), ours, rtol=0, atol=0)
    leaf = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(mish(leaf), leaf, g)
    slope = torch.ops.aten.mish_backward(g, x)
    torch.testing.assert_close(grad, slope)
    y, dy = torch.func.jvp(mish, (x,), (g,))
    torch.testing.assert_close(y, ours, rtol=0, atol=0)
    torch.testing.assert_close(dy, slope)
    y, dy = mish_with_tangent(leaf, g)
    torch.testing.assert_close(y, ours, rtol=0, atol=0)
    torch.testing.assert_close(dy, slope)
    assert y.requires_grad and not dy.requires_grad
    small = x[: LOGISTIC_MISH_MIN_SIZE - 1]
    torch.testing.assert_close(mish(small), F.mish(small), rtol=0, atol=0)
    torch.testing.assert_close(mish_with_tangent(small, g[: small.numel()])[1], slope[: small.numel()], rtol=0, atol=0)
    if dtype == torch.float64:
        x = torch.randn(LOGISTIC_MISH_MIN_SIZE, dtype=dtype, requires_grad=True)
        assert torch.autograd.gradcheck(mish, (x,), fast_mode=True)


@pytest.mark.parametrize("rows", [7, 1024])
def test_forward_with_tangent_is_the_mlp_and_its_jvp(rows):
    """The chain rule through the layers (Mish's tangent) = torch.func.jvp, in float64: with 7 rows F.mish and its
    backward kernel, with 1024 rows (2 x 1024 x 16 hidden values) Mish through the logistic."""
    mlp = SeedMLP(2, (5, 16, 16, 3), mish).init_(SeedStreams([0, 1], "init", "cpu"), torch_default).double()
    x, dx = torch.randn(2, rows, 5, dtype=torch.float64), torch.randn(2, rows, 5, dtype=torch.float64)
    y, dy = mlp.forward_with_tangent(x, dx)
    y_ref, dy_ref = torch.func.jvp(mlp, (x,), (dx,))
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    torch.testing.assert_close(dy, dy_ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="ACTIVATIONS_WITH_TANGENT"):
        SeedMLP(2, (5, 16, 3), torch.relu).forward_with_tangent(x, dx)


def test_polyak_update():
    source = SeedMLP(2, (3, 4, 1)).init_(SeedStreams([0, 1], "init", "cpu"), torch_default)  # not empty()'s garbage
    target = copy.deepcopy(source)
    for p in source.parameters():
        p.data.add_(1.0)
    before = [p.clone() for p in target.parameters()]
    polyak_(target, source, 0.005)
    for t, b, s in zip(target.parameters(), before, source.parameters()):
        torch.testing.assert_close(t, 0.995 * b + 0.005 * s)


def test_transitions_episode_returns_and_gather():
    data = Transitions(
        observations=torch.arange(10.0).view(5, 2),
        actions=torch.zeros(5, 1),
        rewards=torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]),
        next_observations=torch.arange(10.0).view(5, 2) + 1,
        terminals=torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0]),
        episode_index=torch.tensor([0, 0, 1, 1, 1]),
    )
    torch.testing.assert_close(data.episode_returns(), torch.tensor([3.0, 12.0], dtype=torch.float64))
    batch = data.gather(torch.tensor([[4, 1], [0, 0]]))
    assert batch.observations.shape == (2, 2, 2)
    torch.testing.assert_close(batch.rewards, torch.tensor([[5.0, 2.0], [1.0, 1.0]]))
    torch.testing.assert_close(batch.terminals, torch.tensor([[0.0, 1.0], [0.0, 0.0]]))


@pytest.mark.parametrize("n_seeds", [1, 4])
def test_mlp_dropout_uses_the_given_streams_only(n_seeds):
    mlp = SeedMLP(n_seeds, (3, 64, 1), dropout=0.5).init_(SeedStreams(range(n_seeds), "init", "cpu"), torch_default)
    x = torch.randn(n_seeds, 8, 3)
    torch.testing.assert_close(mlp(x), mlp(x))  # no streams: no dropout
    a = mlp(x, SeedStreams(range(n_seeds), "drop", "cpu"))
    b = mlp(x, SeedStreams(range(n_seeds), "drop", "cpu"))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, mlp(x))
