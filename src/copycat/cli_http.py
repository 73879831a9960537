"""The HTTP side of the command line: ``copycat serve`` and the HTTP oracle options.

Kept apart from :mod:`copycat.cli` to keep each module short; ``cli`` registers ``serve_cmd``
and reuses the option declarations for ``steal`` and ``evaluate``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from copycat.errors import CopycatError

_H = "HTTP oracles"
ApiKeyEnvOpt = Annotated[
    str | None,
    typer.Option(help="Environment variable holding the API key.", rich_help_panel=_H),
]
ConcurrencyOpt = Annotated[int, typer.Option(help="Requests in flight.", rich_help_panel=_H)]
MaxQpsOpt = Annotated[
    float | None, typer.Option(help="Client-side pace, requests/s.", rich_help_panel=_H)
]
TimeoutOpt = Annotated[float, typer.Option(help="Seconds per request.", rich_help_panel=_H)]
RetriesOpt = Annotated[int, typer.Option(help="Retries per request.", rich_help_panel=_H)]
PriceOpt = Annotated[
    float, typer.Option(help="Price per 1000 images, for the cost ledger.", rich_help_panel=_H)
]
RequestBatchOpt = Annotated[int, typer.Option(help="Images per request.", rich_help_panel=_H)]
ResponseFormatOpt = Annotated[
    str,
    typer.Option(help="Plain JSON replies: label-score, label or probs.", rich_help_panel=_H),
]
LabelMapOpt = Annotated[
    str | None,
    typer.Option(
        help="Plain JSON: class names in index order (JSON list, a,b,c or a file).",
        rich_help_panel=_H,
    ),
]
InputShapeOpt = Annotated[
    str | None, typer.Option(help="Plain JSON: input shape C,H,W.", rich_help_panel=_H)
]
NumClassesOpt = Annotated[
    int | None, typer.Option(help="Class count, if the target hides it.", rich_help_panel=_H)
]
SendAsOpt = Annotated[
    str, typer.Option(help="OIP input encoding: auto, uint8, fp32, png.", rich_help_panel=_H)
]


def http_options(oracle: str, **options: Any) -> dict[str, Any]:
    """The HTTP oracle options, only for http(s):// and oip+http(s):// oracles."""
    return options if oracle.split(":", 1)[0] in ("http", "https", "oip+http", "oip+https") else {}


def serve_cmd(
    model: Annotated[Path, typer.Option(help="Target folder (model.safetensors + card.json).")],
    host: Annotated[str, typer.Option(help="Interface to bind; loopback by default.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="TCP port (0 picks a free one).")] = 8080,
    output: Annotated[
        str, typer.Option(help="What answers reveal: label, topk:K, probs, rounded:D.")
    ] = "label",
    api_key_env: Annotated[
        str | None,
        typer.Option(help="Environment variable holding the API key; no key, no auth."),
    ] = None,
    rate_limit: Annotated[
        float | None, typer.Option(help="Requests/s per client (429 beyond).")
    ] = None,
    max_batch: Annotated[int, typer.Option(help="Images per request (413 beyond).")] = 256,
    max_body_mb: Annotated[float, typer.Option(help="Request body limit in MiB.")] = 16.0,
    name: Annotated[str | None, typer.Option(help="Model name in URLs (default: folder).")] = None,
    query_log: Annotated[
        str, typer.Option(help="JSON-lines query log ('' turns it off).")
    ] = "query_log.jsonl",
    faults: Annotated[
        str | None, typer.Option(hidden=True, envvar="COPYCAT_FAULTS", help="Test only.")
    ] = None,
) -> None:
    """Serve a target over the Open Inference Protocol and POST /predict (a victim to audit)."""
    import os

    from copycat.cli import _errors
    from copycat.serve import serve
    from copycat.serve_faults import FaultPlan

    with _errors():
        key = None
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise CopycatError(
                    f"--api-key-env {api_key_env}: the variable is unset or empty; "
                    f"export {api_key_env}=<key>"
                )
        serve(
            model,
            host=host,
            port=port,
            name=name,
            output=output,
            api_key=key,
            rate_limit=rate_limit,
            max_batch=max_batch,
            max_body_bytes=int(max_body_mb * 1024 * 1024),
            query_log=query_log or None,
            faults=FaultPlan.from_json(faults) if faults else None,
        )
