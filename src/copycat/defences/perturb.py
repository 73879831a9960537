"""Output perturbation: noise on the probabilities, reverse sigmoid, and prediction poisoning.

All three change only what the target says, never the query. A thief that keeps the top-1
label only is untouched by any perturbation that keeps the argmax (reverse sigmoid; MAD with
``argmax=1``): the audit measures exactly that.
"""

from __future__ import annotations

from typing import Any

import torch

from copycat.defences.base import Defence, normalise
from copycat.defences.registry import Params, no_args
from copycat.errors import ConfigError
from copycat.oracles.base import Answer, Oracle


class Noise(Defence):
    """Gaussian (``sigma``) or Laplace (``b``) noise added to the probabilities, clipped at zero
    and renormalised; the label is the argmax of the noisy answer (it may change). The noise is
    drawn from a generator seeded by ``seed``, so a run is reproducible."""

    name = "noise"

    def __init__(self, inner: Oracle, *, kind: str, scale: float, seed: int = 0) -> None:
        super().__init__(inner)
        self.kind, self.scale, self.seed = kind, scale, seed
        self.tag = f"noise:{kind},scale={scale:g},seed={seed}"
        self._gen: torch.Generator | None = None

    def defend(self, images: torch.Tensor, probs: torch.Tensor, *, client: str) -> Answer:
        if self._gen is None:
            self._gen = torch.Generator().manual_seed(self.seed)
        if self.kind == "gauss":
            noise = torch.randn(probs.shape, generator=self._gen) * self.scale
        else:  # Laplace as the difference of two exponentials
            e = torch.empty(2, *probs.shape).exponential_(generator=self._gen)
            noise = (e[0] - e[1]) * self.scale
        out = normalise(probs + noise, fallback=probs)
        return Answer(labels=out.argmax(1), probs=out)


def build_noise(inner: Oracle, *args: str, device: str = "cpu", **raw: str) -> Noise:
    """``noise:gauss,sigma=S`` or ``noise:laplace,b=B`` (``seed=N`` optional)."""
    if len(args) != 1 or args[0] not in ("gauss", "laplace"):
        raise ConfigError(
            f"noise: {list(args)} is invalid; write noise:gauss,sigma=S or noise:laplace,b=B"
        )
    p = Params("noise", raw)
    key = "sigma" if args[0] == "gauss" else "b"
    scale = p.get_float(key, 0.05, lo=0.0, hi=10.0)
    seed = p.get_int("seed", 0, lo=0)
    p.done()
    return Noise(inner, kind=args[0], scale=scale, seed=seed)


def keep_top(out: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Swap, where needed, so that class ``label`` holds each row's largest value."""
    rows = torch.arange(len(out))
    cur = out.argmax(1)
    fix = cur != label
    if fix.any():
        r, a, b = rows[fix], label[fix], cur[fix]
        out = out.clone()
        out[r, a], out[r, b] = out[r, b], out[r, a]
    return out


class ReverseSigmoid(Defence):
    """Lee et al. 2018, as ART's ``ReverseSigmoid(beta, gamma)``: subtract
    ``beta * (sigmoid(gamma * logit(p)) - 0.5)``, clip and renormalise. The map is not
    monotone (the smallest probabilities come out larger than small ones), which misleads a
    thief that uses the values; the top-1 label is kept (where the map would overturn it,
    the two entries are swapped)."""

    name = "reverse-sigmoid"
    keeps_argmax = True

    def __init__(self, inner: Oracle, *, beta: float = 1.0, gamma: float = 0.1) -> None:
        super().__init__(inner)
        self.beta, self.gamma = beta, gamma
        self.tag = f"reverse-sigmoid:beta={beta:g},gamma={gamma:g}"

    def defend(self, images: torch.Tensor, probs: torch.Tensor, *, client: str) -> Answer:
        eps = 1e-6
        p = probs.clamp(eps, 1.0 - eps)
        r = self.beta * (torch.sigmoid(-self.gamma * torch.log((1.0 - p) / p)) - 0.5)
        label = probs.argmax(1)
        top = torch.nn.functional.one_hot(label, probs.shape[1]).float()
        out = normalise((probs - r).clamp(0.0, 1.0), fallback=top)
        return Answer(labels=label, probs=keep_top(out, label))


def build_reverse_sigmoid(
    inner: Oracle, *args: str, device: str = "cpu", **raw: str
) -> ReverseSigmoid:
    """``reverse-sigmoid:beta=B,gamma=G`` (ART's defaults: beta=1, gamma=0.1)."""
    no_args("reverse-sigmoid", args)
    p = Params("reverse-sigmoid", raw)
    beta = p.get_float("beta", 1.0, lo=0.0, hi=100.0)
    gamma = p.get_float("gamma", 0.1, lo=0.0, hi=100.0)
    p.done()
    return ReverseSigmoid(inner, beta=beta, gamma=gamma)


class MAD(Defence):
    """Prediction poisoning (Orekondy et al., ICLR 2020), maximising angular deviation.

    MAD moves the answer ``y`` within ``||y~ - y|| <= eps`` towards the simplex vertex that
    turns the gradient a thief would take on a surrogate model ``F`` the most. Approximation
    (stated): the gradient is taken with respect to ``F``'s last linear layer only, where
    ``G^T y = (y - F(x)) h^T`` for the penultimate features ``h``; the angle between two such
    gradients is then the angle between ``y - F(x)`` and ``y~ - F(x)``, so only ``F``'s
    probabilities are needed. ``F`` is a randomly initialised ``cnn-small`` (the paper's
    defender does not know the thief's model either) or a target folder (``surrogate=DIR``).
    The paper's heuristic is kept: search the K vertices, then move towards the best as far as
    the budget allows (``argmax=1``: only as far as keeps the top-1 label, MAD-argmax).
    """

    name = "mad"

    def __init__(
        self,
        inner: Oracle,
        *,
        eps: float = 1.0,
        norm: str = "l1",
        argmax: bool = False,
        surrogate: str = "random",
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        super().__init__(inner)
        self.eps, self.norm, self.keeps_argmax = eps, norm, argmax
        self.surrogate, self.seed, self.device = surrogate, seed, device
        self.tag = f"mad:eps={eps:g},norm={norm},argmax={int(argmax)},surrogate={surrogate}"
        self._model: Any = None

    def _surrogate_probs(self, images: torch.Tensor) -> torch.Tensor:
        if self._model is None:
            self._model = self._load_surrogate()
        if isinstance(self._model, torch.nn.Module):
            with torch.inference_mode():
                x = images.to(self.device).float()
                return torch.softmax(self._model(x), dim=1).float().cpu()
        ans = self._model.query(images)
        return ans.probs if ans.probs is not None else torch.ones(len(images), self.num_classes)

    def _load_surrogate(self) -> Any:
        if self.surrogate != "random":
            from copycat.oracles.local import TorchOracle

            return TorchOracle(self.surrogate, device=self.device)
        from copycat.train.models import build_model

        c, h, _ = self.inner.input_shape
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = build_model(
                "cnn-small", in_channels=c, num_classes=self.num_classes, input_size=h
            )
        return model.to(self.device).eval()

    def defend(self, images: torch.Tensor, probs: torch.Tensor, *, client: str) -> Answer:
        from copycat.oracles.base import check_images

        ps = self._surrogate_probs(check_images(images, self.inner.input_shape))
        out = mad_perturb(probs, ps, eps=self.eps, norm=self.norm, argmax=self.keeps_argmax)
        labels = probs.argmax(1) if self.keeps_argmax else out.argmax(1)
        return Answer(labels=labels, probs=out)


def mad_perturb(
    y: torch.Tensor, ps: torch.Tensor, *, eps: float, norm: str, argmax: bool
) -> torch.Tensor:
    """MAD's vertex search for answers ``y`` (N, K) and surrogate probabilities ``ps`` (N, K);
    returns the poisoned answers (N, K), rows summing to 1."""
    n, k = y.shape
    eye = torch.eye(k, dtype=y.dtype)
    step = eye[None] - y[:, None, :]  # (N, K, K): towards each vertex
    length = step.abs().sum(-1) if norm == "l1" else step.norm(dim=-1)
    alpha = (eps / length.clamp(min=1e-12)).clamp(max=1.0)  # (N, K)
    if argmax:
        top = y.argmax(1)
        y_top = y.gather(1, top[:, None])  # (N, 1)
        # y_k + a (1 - y_k) < (1 - a) y_top  <=>  a < (y_top - y_k) / (1 - y_k + y_top)
        limit = (y_top - y) / (1.0 - y + y_top) * 0.999
        limit = torch.where(eye[top].bool(), torch.ones_like(limit), limit.clamp(min=0.0))
        alpha = torch.minimum(alpha, limit)
    cand = y[:, None, :] + alpha[..., None] * step  # (N, K, K)

    def unit(v: torch.Tensor) -> torch.Tensor:
        return v / v.norm(dim=-1, keepdim=True).clamp(min=1e-12)

    base = unit(y - ps)[:, None, :]
    dev = (unit(cand - ps[:, None, :]) - base).pow(2).sum(-1)  # (N, K)
    best = dev.argmax(1)
    out = cand[torch.arange(n), best]
    return normalise(out, fallback=y)


def build_mad(inner: Oracle, *args: str, device: str = "cpu", **raw: str) -> MAD:
    """``mad:eps=E,norm=l1|l2,argmax=0|1,surrogate=random|DIR,seed=N``."""
    no_args("mad", args)
    p = Params("mad", raw)
    eps = p.get_float("eps", 1.0, lo=0.0, hi=2.0)
    norm = p.get_choice("norm", "l1", ("l1", "l2"))
    argmax = p.get_bool("argmax", False)
    surrogate = p.get_str("surrogate", "random")
    seed = p.get_int("seed", 0, lo=0)
    p.done()
    return MAD(
        inner, eps=eps, norm=norm, argmax=argmax, surrogate=surrogate, seed=seed, device=device
    )
