"""The owner's commands: ``copycat verify`` (does a suspect carry the watermark?) and
``copycat audit`` (each attack against each defence, with the benign cost of each)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from copycat.audit.attacks import ATTACKS
from copycat.cli.common import console, errors, table
from copycat.cli.options import TRAIN, ArchOpt, DeviceOpt, EpochsOpt, OracleOpt, TestSetOpt
from copycat.config import AuditConfig
from copycat.errors import ConfigError

AUDIT = AuditConfig()


def parse_budgets(text: str) -> tuple[int, ...]:
    """``500,2k,10k`` -> (500, 2000, 10000)."""
    out = []
    for part in filter(None, (p.strip().lower() for p in text.split(","))):
        try:
            out.append(int(float(part.rstrip("k")) * (1000 if part.endswith("k") else 1)))
        except ValueError as exc:
            raise ConfigError(f"--budgets {text!r} is invalid; accepted: e.g. 500,2k,10k") from exc
    return tuple(out)


def verify_cmd(
    suspect: Annotated[
        Path, typer.Option(help="The suspect: a copycat run directory or a target folder.")
    ],
    target: Annotated[str, typer.Option(help="The watermarked target: a folder or torch:DIR.")],
    key_env: Annotated[
        str | None,
        typer.Option(help="Environment variable with the watermark key (default: from the run)."),
    ] = None,
    queries: Annotated[
        Path | None,
        typer.Option(
            help="Run directory whose answers the watermarked target gave "
            "(default: the suspect's own)."
        ),
    ] = None,
    rate: Annotated[
        float | None, typer.Option(help="The watermark rate (default: from the run).")
    ] = None,
    alpha: Annotated[float, typer.Option(help="Significance level.")] = 0.01,
    device: DeviceOpt = TRAIN.device,
) -> None:
    """Test whether a suspect model reproduces a target's watermark (binomial p-value)."""
    from copycat.audit.verify import verify
    from copycat.devices import resolve_device

    with errors():
        v = verify(
            suspect,
            target=target,
            key_env=key_env,
            queries=queries,
            rate=rate,
            alpha=alpha,
            device=str(resolve_device(device)),
        )
    table(
        f"verify {suspect}",
        [
            ("queries tested", v.queries),
            ("watermarked (flipped) queries", v.flipped),
            ("suspect gives the watermark label", v.matches),
            ("suspect disagrees with the target", v.informative),
            ("chance per query (independent model)", v.chance),
            ("p-value", f"{v.p_value:.3g}"),
            ("verdict", "stolen (p < alpha)" if v.stolen else "no evidence of theft"),
        ],
    )


def audit_cmd(
    oracle: OracleOpt,
    out: Annotated[Path, typer.Option(help="Audit folder (one run directory per cell).")],
    attacks: Annotated[
        str, typer.Option(help=f"Comma-separated attacks: {ATTACKS.usages()}.")
    ] = ",".join(AUDIT.attacks),
    defences: Annotated[
        str,
        typer.Option(
            help="Comma-separated defence specs, 'none' for the undefended target "
            "(e.g. none,reverse-sigmoid:beta=1,gamma=0.1,prada:delta=0.9)."
        ),
    ] = ",".join(AUDIT.defences),
    budgets: Annotated[str, typer.Option(help="Query budgets, e.g. 2k,10k.")] = "2k",
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds.")] = "0",
    test_set: TestSetOpt = AUDIT.test_set,
    pd_pool: Annotated[str, typer.Option(help="Pool of the pd-* attacks.")] = AUDIT.pd_pool,
    benign_images: Annotated[
        int, typer.Option(help="Test images sent as benign traffic.")
    ] = AUDIT.benign_images,
    arch: ArchOpt = TRAIN.arch,
    epochs: EpochsOpt | None = TRAIN.epochs,
    device: DeviceOpt = TRAIN.device,
) -> None:
    """Run each attack against each defence of a local target (torch:, onnx:); writes
    audit.md, audit.json and audit.png. Run the same command again to resume."""
    from copycat.audit.matrix import run_audit
    from copycat.audit.render import render_audit
    from copycat.defences.registry import split_defence_list

    with errors():
        try:
            seed_list = tuple(int(s) for s in seeds.split(",") if s.strip())
        except ValueError as exc:
            raise ConfigError(f"--seeds {seeds!r} is invalid; accepted: e.g. 0,1,2") from exc
        cfg = AuditConfig(
            out=str(out),
            oracle=oracle,
            attacks=tuple(a.strip() for a in attacks.split(",") if a.strip()),
            defences=tuple(split_defence_list(defences)),
            budgets=parse_budgets(budgets),
            seeds=seed_list,
            test_set=test_set,
            pd_pool=pd_pool,
            benign_images=benign_images,
            train=dataclasses.replace(TRAIN, arch=arch, epochs=epochs, device=device),
        )

        def on_cell(name: str, cell: dict[str, object]) -> None:
            if cell:
                console.print(
                    f"{name}: performance {cell['performance']}, alarm at {cell['alarm_at']}"
                )
            else:
                console.print(f"[bold]{escape(name)}[/] ...")

        data = run_audit(cfg, on_cell=on_cell)
        path = render_audit(data, out)
    console.print(f"audit written to [bold]{escape(str(path))}[/]")
