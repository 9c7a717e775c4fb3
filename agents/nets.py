"""The small network kit: layers with a leading seed dimension, and the updates that go with them.

A :class:`SeedLinear` holds one weight matrix per seed (``[n_seeds, in, out]``) and maps
``[n_seeds, ..., in]`` to ``[n_seeds, ..., out]`` with one batched matmul, so five seeds cost one
kernel launch, not five. Initialisation draws each seed's weights from that seed's own generator
on the CPU, so a seed starts from the same weights whatever group or device it runs in.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from agents.base import SeedStreams


LOGISTIC_MISH_MIN_SIZE = 16_384
"""Elements from which the CPU's Mish goes through the logistic (:class:`_LogisticMish`). Below it ``F.mish``'s one
pass each way costs less than ten passes and a Python autograd function (forward and backward timed together, the
crossover lies between 8,192 and 16,384 elements on both development machines, AVX-512 and AVX2; on the AVX2 one
279 against 367 µs at 8,192, 391 against 293 µs at 16,384)."""


def _logistic_mish_parts(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(sigmoid(x), tanh(softplus(x)))`` from one logistic: with ``s = sigmoid(x)``, ``1 + e^x = 1 / (1 - s)``, so
    ``tanh(softplus(x)) = ((1 + e^x)^2 - 1) / ((1 + e^x)^2 + 1) = n / (2 - n)`` with ``n = s (2 - s)``, exact for
    large negative ``x`` (no cancellation) and 1 for large positive ``x`` (no overflow)."""
    s = torch.sigmoid(x)
    n = torch.addcmul(s, s, s, value=-1).add_(s)
    return s, n.div_(torch.neg(n).add_(2))  # not rsub(n, 2), which wraps 2 as a tensor first (slower)


def _logistic_mish_slope(x: Tensor, y: Tensor, s: Tensor, w: Tensor) -> Tensor:
    """``mish'(x) = w + x s (1 - w^2) = w + s (x - y w)`` with ``y = mish(x) = x w``, ``s = sigmoid(x)``,
    ``w = tanh(softplus(x))``: two fused multiply-adds."""
    return torch.addcmul(w, s, torch.addcmul(x, y, w, value=-1))


class _LogisticMish(torch.autograd.Function):
    """Mish and its derivative through :func:`_logistic_mish_parts`: one logistic and six elementwise passes forward,
    three backward, where PyTorch's CPU kernels evaluate exp, log1p and tanh per element each way (a forward pass
    took about 8x a sigmoid's time on the development machine, where Mish was a third of DQL's update). Returns
    ``(mish(x), s, w)``; with ``x`` and ``mish(x)``, ``s`` and ``w`` give the backward and forward-mode derivatives
    (:func:`_logistic_mish_slope`). Gradients for ``s`` and ``w`` are not materialised (autograd would otherwise
    allocate and zero two tensors of ``x``'s size for every backward call, only for them to be ignored)."""

    @staticmethod
    def forward(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        s, w = _logistic_mish_parts(x)
        return x * w, s, w

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        (x,), (y, s, w) = inputs, output
        ctx.mark_non_differentiable(s, w)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x, y, s, w)
        ctx.save_for_forward(x, y, s, w)

    @staticmethod
    def backward(ctx, grad: Tensor | None, _grad_s: None, _grad_w: None) -> Tensor | None:
        return None if grad is None else _logistic_mish_slope(*ctx.saved_tensors).mul_(grad)

    @staticmethod
    def jvp(ctx, dx: Tensor) -> tuple[Tensor, None, None]:
        return _logistic_mish_slope(*ctx.saved_tensors).mul_(dx), None, None


def _through_logistic(x: Tensor) -> bool:
    return x.device.type == "cpu" and x.numel() >= LOGISTIC_MISH_MIN_SIZE


def mish(x: Tensor) -> Tensor:
    """Mish, ``x tanh(softplus(x))`` (Misra 2019; ``nn.Mish`` in the diffusion agents' official code): on the CPU
    from :data:`LOGISTIC_MISH_MIN_SIZE` elements through :class:`_LogisticMish` (equal to ``F.mish`` to float
    rounding, tested), otherwise ``F.mish``, one fused kernel each way (on a GPU one launch, not seven). Where no
    graph is recorded (``no_grad``: target actions, acting) the logistic's passes run without the autograd function,
    whose Python call costs about as much as a pass here."""
    if not _through_logistic(x):
        return F.mish(x)
    if torch.is_grad_enabled():
        return _LogisticMish.apply(x)[0]
    return _LogisticMish.forward(x)[0]  # its forward, called directly: nothing recorded


def mish_with_tangent(h: Tensor, dh: Tensor) -> tuple[Tensor, Tensor]:
    """``(mish(h), mish'(h) dh)``, the tangent without gradient. Mish acts elementwise, so the tangent is what its
    backward computes for the output gradient ``dh``: from the forward's logistic, or Mish's backward kernel (one
    launch instead of a dozen for the formula written out)."""
    if _through_logistic(h):
        y, s, w = _LogisticMish.apply(h)
        with torch.no_grad():
            return y, _logistic_mish_slope(h, y, s, w).mul_(dh)
    y = F.mish(h)
    with torch.no_grad():
        return y, torch.ops.aten.mish_backward(dh, h)


ACTIVATIONS_WITH_TANGENT: dict[Callable[[Tensor], Tensor], Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]] = {
    mish: mish_with_tangent,
}


class SeedLinear(nn.Module):
    """``y = x @ W_k + b_k`` for seed ``k``; weights ``[n_seeds, in, out]``, biases ``[n_seeds, 1, out]``."""

    def __init__(self, n_seeds: int, in_features: int, out_features: int):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(n_seeds, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(n_seeds, 1, out_features))

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        y = torch.baddbmm(self.bias, x.reshape(lead[0], -1, self.in_features), self.weight)
        return y.reshape(*lead, self.out_features)

    def tangent(self, dx: Tensor) -> Tensor:
        """The layer's derivative along ``dx``: ``dx @ W_k`` (no bias)."""
        lead = dx.shape[:-1]
        return torch.bmm(dx.reshape(lead[0], -1, self.in_features), self.weight).reshape(*lead, self.out_features)


class SeedLayerNorm(nn.Module):
    """LayerNorm over the last dimension with a per-seed affine transform."""

    def __init__(self, n_seeds: int, features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n_seeds, 1, features))
        self.bias = nn.Parameter(torch.zeros(n_seeds, 1, features))

    def forward(self, x: Tensor) -> Tensor:
        if self.weight.shape[0] == 1:  # one seed: PyTorch's LayerNorm with its affine transform fused in
            return F.layer_norm(x, x.shape[-1:], self.weight.view(-1), self.bias.view(-1), self.eps)
        y = F.layer_norm(x, x.shape[-1:], eps=self.eps)
        lead = x.shape[:-1]
        y = y.reshape(lead[0], -1, x.shape[-1]) * self.weight + self.bias
        return y.reshape(x.shape)


Init = Callable[[Tensor, torch.Generator], None]


def orthogonal(gain: float = 1.0) -> Init:
    """Orthogonal kernels (flax ``nn.initializers.orthogonal(gain)``), zero biases."""

    def init(weight: Tensor, generator: torch.Generator) -> None:
        # flax kernels are [in, out]; orthogonal_ fills torch's [out, in] layout, so transpose.
        kernel = torch.empty(weight.shape[1], weight.shape[0])
        nn.init.orthogonal_(kernel, gain=gain, generator=generator)
        weight.copy_(kernel.T)

    return init


def torch_default(weight: Tensor, generator: torch.Generator) -> None:
    """``nn.Linear``'s default kernel init: U(-1/sqrt(in), 1/sqrt(in))."""
    bound = 1.0 / math.sqrt(weight.shape[0])
    nn.init.uniform_(weight, -bound, bound, generator=generator)


@torch.no_grad()
def init_seed_linear_(layer: SeedLinear, streams: SeedStreams, init: Init, bias: str = "zeros") -> None:
    """Initialise every seed's slice from that seed's generator (``streams`` live on the CPU).

    ``bias="zeros"`` (flax default) or ``"torch_default"`` (``nn.Linear``: U(-1/sqrt(in), 1/sqrt(in))).
    """
    bound = 1.0 / math.sqrt(layer.in_features)
    for k, generator in enumerate(streams.generators):
        weight = torch.empty(layer.in_features, layer.out_features)
        init(weight, generator)
        layer.weight[k].copy_(weight)
        if bias == "torch_default":
            layer.bias[k].copy_(torch.empty(1, layer.out_features).uniform_(-bound, bound, generator=generator))
        else:
            layer.bias[k].zero_()


class SeedMLP(nn.Module):
    """An MLP per seed: ``sizes = (in, hidden..., out)``, activation after every hidden layer.

    ``layer_norm`` puts a LayerNorm before each hidden activation (the DTQL/CPQL critics);
    ``activate_final`` also activates the output (IQL's policy trunk). Dropout after each
    activation is drawn from the caller's per-seed streams, and only when they are passed.
    """

    def __init__(
        self,
        n_seeds: int,
        sizes: Sequence[int],
        activation: Callable[[Tensor], Tensor] = F.relu,
        *,
        layer_norm: bool = False,
        activate_final: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.activation = activation
        self.dropout = dropout
        self.linears = nn.ModuleList(SeedLinear(n_seeds, a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        n_activated = len(self.linears) if activate_final else len(self.linears) - 1
        self.norms = nn.ModuleList(SeedLayerNorm(n_seeds, b) for b in sizes[1 : n_activated + 1]) if layer_norm else None
        self.n_activated = n_activated

    def init_(self, streams: SeedStreams, init: Init, bias: str = "zeros") -> SeedMLP:
        for layer in self.linears:
            init_seed_linear_(layer, streams, init, bias)
        return self

    def forward(self, x: Tensor, dropout_streams: SeedStreams | None = None) -> Tensor:
        for i, layer in enumerate(self.linears):
            x = layer(x)
            if i < self.n_activated:
                if self.norms is not None:
                    x = self.norms[i](x)
                x = self.activation(x)
                if self.dropout > 0 and dropout_streams is not None:
                    keep = dropout_streams.rand(*x.shape[1:]) >= self.dropout
                    x = x * keep / (1.0 - self.dropout)
        return x

    def forward_with_tangent(self, x: Tensor, dx: Tensor) -> tuple[Tensor, Tensor]:
        """``(MLP(x), J(x) dx)``: the forward pass, and its derivative along ``dx`` carried through the layers by
        the chain rule (forward-mode differentiation, ``h = xW + b -> dh = dx W``, ``a = f(h) -> da = f'(h) dh``).

        The derivative is computed without gradient (it serves as a stop-gradient target); ``x``'s path keeps its
        graph as in :meth:`forward`. It equals ``torch.func.jvp`` (``tests/test_ofql.py``) without that
        transform's per-operation overhead. For MLPs without LayerNorm and dropout, with an activation in
        :data:`ACTIVATIONS_WITH_TANGENT`.
        """
        if self.norms is not None or self.dropout > 0 or self.activation not in ACTIVATIONS_WITH_TANGENT:
            raise ValueError("forward_with_tangent: only for MLPs without LayerNorm and dropout, with an activation "
                             f"in ACTIVATIONS_WITH_TANGENT ({', '.join(f.__name__ for f in ACTIVATIONS_WITH_TANGENT)})")
        activation_with_tangent = ACTIVATIONS_WITH_TANGENT[self.activation]
        for i, layer in enumerate(self.linears):
            x = layer(x)
            with torch.no_grad():
                dx = layer.tangent(dx)
            if i < self.n_activated:
                x, dx = activation_with_tangent(x, dx)
        return x, dx


def adam(parameters: Iterable[nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam (PyTorch defaults: betas 0.9/0.999, eps 1e-8, as optax.adam) with the fused kernel.

    The learning rate is a 0-dim float32 tensor on the parameters' device that the kernel reads when it runs,
    so that a captured CUDA graph follows a schedule (``capturable`` on CUDA: the step counts stay there too).
    ``initial_lr`` stays a float: a ``LambdaLR`` then computes each rate on the host and writes it in place,
    never reading the device.
    """
    parameters = list(parameters)
    device = parameters[0].device
    optimizer = torch.optim.Adam(parameters, lr=torch.tensor(lr, device=device), fused=True,
                                 capturable=device.type == "cuda")
    for group in optimizer.param_groups:
        group["initial_lr"] = lr
    return optimizer


def cosine_annealing(t: float, t_max: float) -> float:
    """``CosineAnnealingLR``'s factor with ``eta_min = 0`` in closed form: ``0.5 (1 + cos(pi t / t_max))``."""
    return 0.5 * (1.0 + math.cos(math.pi * t / t_max))


@torch.no_grad()
def polyak_(target: nn.Module, source: nn.Module, tau: float) -> None:
    """``target <- (1 - tau) * target + tau * source`` for every parameter (one fused kernel)."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


@torch.no_grad()
def clip_grad_norm_per_seed_(parameters: Iterable[nn.Parameter], max_norm: float) -> Tensor:
    """``clip_grad_norm_`` applied to each seed separately; returns the per-seed norms ``[n_seeds]``.

    Each seed's gradient is rescaled by ``min(1, max_norm / (norm_k + 1e-6))`` exactly as
    ``torch.nn.utils.clip_grad_norm_`` would for that seed alone, without touching the others.
    ``max_norm <= 0`` (the official configs' "no clipping") only measures the norms.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    n_seeds = grads[0].shape[0]
    # the norm of every (parameter, seed) slice in one multi-tensor call, then each seed's norm over its slices
    slice_norms = torch.stack(torch._foreach_norm([g[k] for g in grads for k in range(n_seeds)]))
    norms = torch.linalg.vector_norm(slice_norms.view(len(grads), n_seeds), dim=0)
    if max_norm > 0:
        scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        factors = [scale.view(n_seeds, *([1] * (g.dim() - 1))) for g in grads]
        if torch.compiler.is_compiling():  # Inductor fuses these itself; torch 2.11 mis-generates the foreach
            for g, factor in zip(grads, factors):  # kernel of a per-seed factor (Triton: in_ptr1 undefined)
                g.mul_(factor)
        else:
            torch._foreach_mul_(grads, factors)
    return norms


class TwinQ(nn.Module):
    """Two independent Q networks ``Q_i(s, a) = MLP_i([s, a])``, each ``[n_seeds, ...]``."""

    def __init__(
        self,
        n_seeds: int,
        obs_dim: int,
        act_dim: int,
        hidden_dims: Sequence[int],
        activation: Callable[[Tensor], Tensor] = F.relu,
        *,
        layer_norm: bool = False,
    ):
        super().__init__()
        sizes = (obs_dim + act_dim, *hidden_dims, 1)
        self.q1 = SeedMLP(n_seeds, sizes, activation, layer_norm=layer_norm)
        self.q2 = SeedMLP(n_seeds, sizes, activation, layer_norm=layer_norm)

    def init_(self, streams: SeedStreams, init: Init, bias: str = "zeros") -> TwinQ:
        self.q1.init_(streams, init, bias)
        self.q2.init_(streams, init, bias)
        return self

    def forward(self, observations: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.cat([observations, actions], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


def sinusoidal_frequencies(dim: int, device: torch.device) -> Tensor:
    """``w_i = 10000^(-i / (dim/2 - 1))``, ``i < dim/2`` (DQL ``agents/helpers.py SinusoidalPosEmb``), in the default
    dtype; made once per size, device and dtype and shared, never written to (three kernel launches fewer per call)."""
    return _frequencies(dim, device, torch.get_default_dtype())


@functools.lru_cache(maxsize=None)
def _frequencies(dim: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    half = dim // 2
    with torch.inference_mode(False), torch.no_grad():  # a plain tensor, whatever mode the first call is in
        return torch.exp(torch.arange(half, device=device, dtype=dtype) * (-math.log(10000.0) / (half - 1)))


def sinusoidal_embedding(t: Tensor, dim: int) -> Tensor:
    """Transformer-style embedding of (diffusion) times ``t`` ``[...]`` -> ``[..., dim]``: ``[sin(t w), cos(t w)]``
    with the frequencies ``w`` of :func:`sinusoidal_frequencies`."""
    freqs = sinusoidal_frequencies(dim, t.device)
    angles = t.to(freqs.dtype)[..., None] * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def sinusoidal_embedding_derivative(t: Tensor, dim: int) -> Tensor:
    """``d/dt`` of :func:`sinusoidal_embedding`: ``[w cos(t w), -w sin(t w)]``."""
    freqs = sinusoidal_frequencies(dim, t.device)
    angles = t.to(freqs.dtype)[..., None] * freqs
    return torch.cat([freqs * angles.cos(), -freqs * angles.sin()], dim=-1)
