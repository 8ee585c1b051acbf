"""The `trainyard` command: up, serve, token, gateway."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from trainyard.runtime.settings import SERVICE_NAMES, CommonSettings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
gateway_app = typer.Typer(no_args_is_help=True, help="The Envoy gateway.")
app.add_typer(gateway_app, name="gateway")

DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir", envvar="TRAINYARD_DATA_DIR", help="SQLite files, blobs, logs, secrets."
    ),
]


@app.command()
def up(
    data_dir: DataDir = Path(".data"),
    http_port: Annotated[
        int, typer.Option(help="REST/gRPC port of Envoy; 0 = any free port.")
    ] = 8080,
    host: Annotated[str, typer.Option(help="Address every listener binds.")] = "127.0.0.1",
) -> None:
    """Start all five services and Envoy on embedded defaults; Ctrl-C stops everything."""
    from trainyard.suite import Suite

    suite = Suite(data_dir, host=host, http_port=http_port)
    typer.echo(f"starting Trainyard in {data_dir.resolve()} ...")
    endpoints = suite.start()
    typer.echo(f"REST (through Envoy):  {endpoints['http']}")
    typer.echo(f"gRPC (through Envoy):  {endpoints['grpc_gateway']}")
    for name, address in endpoints["grpc"].items():
        typer.echo(f"gRPC {name + ':':14s} {address}")
    typer.echo(f"endpoints file:        {data_dir.resolve() / 'endpoints.json'}")
    typer.echo(f"service logs:          {endpoints['logs']}")
    typer.echo(f"user token:            trainyard token --data-dir {data_dir} --user alice")
    typer.echo("ready. Ctrl-C stops.")
    suite.run_forever()


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help=f"One of: {', '.join(SERVICE_NAMES)}.")],
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="gRPC port; 0 = any free port.")] = None,
    ready_file: Annotated[
        Path | None, typer.Option(help="Write {address, pid} as JSON here once serving.")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus /metrics on this port.")
    ] = None,
) -> None:
    """Run one service alone."""
    if service not in SERVICE_NAMES:
        raise typer.BadParameter(f"unknown service {service!r}; one of {', '.join(SERVICE_NAMES)}")
    if metrics_port is not None:
        os.environ[f"TRAINYARD_{service.upper()}_METRICS_PORT"] = str(metrics_port)
    from trainyard import services

    services.serve(service, host=host, port=port, ready_file=ready_file)


@app.command()
def token(
    user: Annotated[str | None, typer.Option(help="Mint a user token for this user.")] = None,
    job_model: Annotated[
        str | None, typer.Option(help="Mint a job token for this model id instead.")
    ] = None,
    owner: Annotated[str, typer.Option(help="Owner named in a job token.")] = "system",
    ttl: Annotated[int, typer.Option(help="Lifetime in seconds.")] = 3600,
    data_dir: DataDir = Path(".data"),
) -> None:
    """Print a bearer token signed with this instance's key."""
    from trainyard.runtime.server import authority_from

    if (user is None) == (job_model is None):
        raise typer.BadParameter("give exactly one of --user or --job-model")
    os.environ.setdefault("TRAINYARD_DATA_DIR", str(data_dir))
    common = CommonSettings(data_dir=data_dir)
    authority = authority_from(common)
    if user is not None:
        typer.echo(authority.mint_user(user, ttl))
    else:
        typer.echo(authority.mint_job(owner, model_id=job_model, ttl=ttl))


def _upstreams(values: list[str]) -> dict[str, str]:
    upstreams: dict[str, str] = {}
    for value in values:
        name, sep, address = value.partition("=")
        if not sep or name not in SERVICE_NAMES or ":" not in address:
            raise typer.BadParameter(f"--upstream wants NAME=HOST:PORT, got {value!r}")
        upstreams[name] = address
    return upstreams


Upstreams = Annotated[
    list[str], typer.Option("--upstream", help="NAME=HOST:PORT, once per service.")
]


TrustedHops = Annotated[
    int,
    typer.Option(
        "--xff-trusted-hops",
        help="Proxies in front of Envoy that append to x-forwarded-for (a load balancer: 1); "
        "the client address is taken that many entries from the right.",
    ),
]


def _bootstrap(
    upstream: list[str], http_host: str, http_port: int, admin_port: int, trusted_hops: int = 0
) -> Any:
    from trainyard.gateway.config import render

    return render(
        _upstreams(upstream),
        http_host=http_host,
        http_port=http_port,
        admin_host=http_host,
        admin_port=admin_port,
        xff_trusted_hops=trusted_hops,
    )


@gateway_app.command("render")
def gateway_render(
    upstream: Upstreams,
    http_port: int = 8080,
    admin_port: int = 9901,
    http_host: str = "0.0.0.0",
    xff_trusted_hops: TrustedHops = 0,
) -> None:
    """Print the Envoy bootstrap (JSON, descriptor set inlined)."""
    cfg = _bootstrap(upstream, http_host, http_port, admin_port, xff_trusted_hops)
    json.dump(cfg, sys.stdout, indent=1)


@gateway_app.command("run")
def gateway_run(
    upstream: Upstreams,
    http_port: int = 8080,
    admin_port: int = 9901,
    http_host: str = "0.0.0.0",
    workdir: Path = Path("/tmp/trainyard-gateway"),
    xff_trusted_hops: TrustedHops = 0,
) -> None:
    """Render the bootstrap into WORKDIR and exec Envoy (for containers)."""
    from trainyard.gateway.process import envoy_binary, envoy_concurrency

    try:
        workers = envoy_concurrency()
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    cfg = _bootstrap(upstream, http_host, http_port, admin_port, xff_trusted_hops)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "envoy.json"
    path.write_text(json.dumps(cfg))
    binary = str(envoy_binary())
    args = ["-c", str(path), "--disable-hot-restart", "-l", "info", "--concurrency", str(workers)]
    os.execv(binary, [binary, *args])


def main() -> None:
    app()


if __name__ == "__main__":
    main()
