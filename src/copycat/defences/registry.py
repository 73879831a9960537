"""The defence registry: ``name:args`` -> a defence wrapping an oracle.

Every defence scheme is listed here, once (:data:`DEFENCES`); the parser, ``--help`` and error
messages read the list from it. A spec is ``name`` or ``name:a,k=v,...``: bare words are
positional, ``k=v`` pairs are keyword parameters (``noise:gauss,sigma=0.05``). Builders take
``(inner, *positional, device=..., **params)`` with every value still a string and convert it
through :class:`Params`, which names the field and what it accepts on a bad value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from copycat.errors import ConfigError
from copycat.registry import Registry

if TYPE_CHECKING:
    from copycat.defences.base import Defence
    from copycat.oracles.base import Oracle

DEFENCES = Registry("defence")
DEFENCES.add(
    "noise",
    "copycat.defences.perturb:build_noise",
    usage="noise:gauss,sigma=S | noise:laplace,b=B",
)
DEFENCES.add(
    "reverse-sigmoid",
    "copycat.defences.perturb:build_reverse_sigmoid",
    usage="reverse-sigmoid:beta=B,gamma=G",
)
DEFENCES.add("mad", "copycat.defences.perturb:build_mad", usage="mad:eps=E[,norm=l1|l2,argmax=0|1]")
DEFENCES.add(
    "adaptive-misinfo",
    "copycat.defences.misinfo:build_adaptive_misinfo",
    usage="adaptive-misinfo:tau=T[,nu=N]",
)
DEFENCES.add(
    "prada", "copycat.defences.prada:build_prada", usage="prada:delta=D,action=block|degrade"
)
DEFENCES.add(
    "watermark",
    "copycat.defences.watermark:build_watermark",
    usage="watermark:rate=R,key_env=VAR",
)

#: The audit's name for "no defence" (not a scheme: it builds nothing).
NONE = "none"


@dataclass(frozen=True, slots=True)
class DefenceSpec:
    """A parsed ``name:args`` spec."""

    name: str
    args: tuple[str, ...] = ()
    params: dict[str, str] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        """A file-name-safe form of the spec (for audit cell folders)."""
        text = "_".join([self.name, *self.args, *(f"{k}{v}" for k, v in self.params.items())])
        return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in text)


def parse_defence_spec(spec: str) -> DefenceSpec:
    """``name:a,k=v`` -> :class:`DefenceSpec`; an unknown name is refused with the list."""
    name, _, rest = spec.strip().partition(":")
    if name != NONE:
        DEFENCES.get(name)  # refuses unknown names, listing the known ones
    args: list[str] = []
    params: dict[str, str] = {}
    for token in filter(None, (t.strip() for t in rest.split(","))):
        key, eq, value = token.partition("=")
        if not eq:
            args.append(token)
        elif key.strip() in params:
            raise ConfigError(f"defence {spec!r} sets {key!r} twice")
        else:
            params[key.strip()] = value.strip()
    return DefenceSpec(name, tuple(args), params)


def split_defence_list(text: str) -> list[str]:
    """``none,reverse-sigmoid:beta=1,gamma=0.1,noise:gauss,sigma=0.05`` -> the three specs.

    A comma-separated token that is ``k=v`` without a scheme continues the previous spec, so
    specs need no quoting; ``;`` always separates."""
    specs: list[str] = []
    for part in text.replace(";", "\n").splitlines():
        for token in filter(None, (t.strip() for t in part.split(","))):
            head = token.split(":", 1)[0]
            continues = "=" in head and specs and head.split("=", 1)[0] not in DEFENCES
            if continues:
                specs[-1] += "," + token
            else:
                specs.append(token)
    return specs


class Params:
    """Typed access to a spec's ``k=v`` values; :meth:`done` refuses keys nobody read."""

    def __init__(self, scheme: str, params: dict[str, str]) -> None:
        self.scheme = scheme
        self.raw = dict(params)
        self.used: set[str] = set()

    def _get(self, key: str) -> str | None:
        self.used.add(key)
        return self.raw.get(key)

    def _bad(self, key: str, value: str, accepted: str) -> ConfigError:
        return ConfigError(f"{self.scheme}: {key}={value!r} is invalid; accepted: {accepted}")

    def get_float(self, key: str, default: float, *, lo: float, hi: float = float("inf")) -> float:
        raw = self._get(key)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise self._bad(key, raw, f"a number in [{lo}, {hi}]") from None
        if not lo <= value <= hi:
            raise self._bad(key, raw, f"a number in [{lo}, {hi}]")
        return value

    def get_int(self, key: str, default: int, *, lo: int) -> int:
        raw = self._get(key)
        if raw is None:
            return default
        if not raw.lstrip("-").isdigit() or int(raw) < lo:
            raise self._bad(key, raw, f"an integer >= {lo}")
        return int(raw)

    def get_choice(self, key: str, default: str, options: Sequence[str]) -> str:
        raw = self._get(key)
        if raw is None:
            return default
        if raw not in options:
            raise self._bad(key, raw, " or ".join(options))
        return raw

    def get_bool(self, key: str, default: bool) -> bool:
        raw = self._get(key)
        if raw is None:
            return default
        if raw.lower() not in ("0", "1", "true", "false", "yes", "no"):
            raise self._bad(key, raw, "0 or 1")
        return raw.lower() in ("1", "true", "yes")

    def get_str(self, key: str, default: str) -> str:
        raw = self._get(key)
        return default if raw is None else raw

    def done(self) -> None:
        unknown = sorted(set(self.raw) - self.used)
        if unknown:
            raise ConfigError(
                f"{self.scheme}: unknown parameter(s) {unknown}; accepted: {sorted(self.used)}"
            )


def no_args(scheme: str, args: tuple[str, ...]) -> None:
    if args:
        raise ConfigError(f"{scheme}: unexpected {list(args)}; write parameters as key=value")


def build_defence(inner: Oracle, spec: str, *, device: str = "cpu") -> Oracle:
    """Wrap ``inner`` in the defence ``spec`` (``none`` returns ``inner``)."""
    parsed = parse_defence_spec(spec)
    if parsed.name == NONE:
        return inner
    builder = DEFENCES.get(parsed.name)
    oracle: Oracle = builder(inner, *parsed.args, device=device, **parsed.params)
    return oracle


def apply_defences(inner: Oracle, specs: Sequence[str], *, device: str = "cpu") -> Oracle:
    """Stack the defences ``specs`` on ``inner``, first spec innermost."""
    oracle = inner
    for spec in specs:
        oracle = build_defence(oracle, spec, device=device)
    return oracle


def defence_layers(oracle: Oracle) -> list[Defence]:
    """The defences wrapped around an oracle (outermost first), through any wrapper."""
    from copycat.defences.base import Defence

    found: list[Defence] = []
    node: object = oracle
    while node is not None:
        if isinstance(node, Defence):
            found.append(node)
        node = node.__dict__.get("inner") if hasattr(node, "__dict__") else None
    return found


def open_defended(
    spec: str, defences: Sequence[str], *, output: str = "label", device: str = "cpu"
) -> Oracle:
    """A local oracle (``torch:`` / ``onnx:``) behind ``defences``, restricted to ``output``:
    the model owner's simulation of a defended deployment, without a server."""
    from copycat.oracles.outputs import restrict
    from copycat.oracles.registry import is_http, parse_oracle_spec

    if is_http(spec):
        raise ConfigError(
            f"--defence applies to local targets (torch:DIR, onnx:FILE), not {spec!r}: a "
            "remote target's defences run on its server (copycat serve --defence ...)"
        )
    base = parse_oracle_spec(spec, output="probs", device=device)
    return restrict(apply_defences(base, defences, device=device), output)
