"""``copycat serve``: expose a target over HTTP, the model owner's side of an audit."""

from __future__ import annotations

import os

import typer

from copycat.cli.common import errors
from copycat.cli.options import (
    SERVE,
    DefenceOpt,
    HostOpt,
    MaxBatchOpt,
    MaxBodyOpt,
    MaxClientsOpt,
    MaxRequestMpOpt,
    ModelDirOpt,
    ModelNameOpt,
    PortOpt,
    QueryLogOpt,
    RateLimitImagesOpt,
    RateLimitOpt,
    ServeKeyEnvOpt,
    ServeOutputOpt,
    TrustedProxyHeaderOpt,
)
from copycat.config import ServeConfig
from copycat.errors import CopycatError


def serve_cmd(
    model: ModelDirOpt,
    host: HostOpt = SERVE.host,
    port: PortOpt = SERVE.port,
    output: ServeOutputOpt = SERVE.output,
    api_key_env: ServeKeyEnvOpt = None,
    rate_limit: RateLimitOpt = SERVE.rate_limit,
    max_batch: MaxBatchOpt = SERVE.max_batch,
    max_body_mb: MaxBodyOpt = SERVE.max_body_mb,
    name: ModelNameOpt = SERVE.name,
    query_log: QueryLogOpt = SERVE.query_log or "",
    rate_limit_images: RateLimitImagesOpt = SERVE.rate_limit_images,
    max_clients: MaxClientsOpt = SERVE.max_clients,
    trusted_proxy_header: TrustedProxyHeaderOpt = SERVE.trusted_proxy_header,
    max_request_mp: MaxRequestMpOpt = SERVE.max_request_mp,
    defence: DefenceOpt = None,
    # Test only, loopback only; hidden from --help and never read from the environment.
    faults: str | None = typer.Option(None, hidden=True, help="Test only."),
) -> None:
    """Serve a target over the Open Inference Protocol and POST /predict (a victim to audit)."""
    from copycat.serve.app import serve
    from copycat.serve.faults import FaultPlan

    with errors():
        key = None
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise CopycatError(
                    f"--api-key-env {api_key_env}: the variable is unset or empty; "
                    f"export {api_key_env}=<key>"
                )
        cfg = ServeConfig(
            host=host,
            port=port,
            name=name,
            output=output,
            rate_limit=rate_limit,
            max_batch=max_batch,
            max_body_mb=max_body_mb,
            query_log=query_log or None,
            rate_limit_images=rate_limit_images,
            max_clients=max_clients,
            trusted_proxy_header=trusted_proxy_header or None,
            max_request_mp=max_request_mp,
            defences=tuple(defence or ()),
        )
        serve(
            model,
            config=cfg,
            api_key=key,
            faults=FaultPlan.from_json(faults) if faults else None,
        )
