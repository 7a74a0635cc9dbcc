"""``edgeplane dev``: the local stack, its emulated BMCs, and the demo."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from edgeplane.cli.config import edgeplane_home, save_context
from edgeplane.cli.render import console

app = typer.Typer(no_args_is_help=True, help="The local stack: every part on this machine.")
bmc = typer.Typer(no_args_is_help=True, help="Emulated BMCs.")
app.add_typer(bmc, name="bmc")

StackDir = Annotated[Path | None, typer.Option(
    "--dir", help="where the stack keeps its state and logs (default $EDGEPLANE_HOME/dev)")]


def _stack_dir(directory: Path | None) -> Path:
    return directory or edgeplane_home() / "dev"


@app.command("up")
def up(
    sites: Annotated[int, typer.Option(help="how many sites")] = 3,
    redfish: Annotated[int, typer.Option(
        help="Redfish machines per site on sushy-tools' emulator")] = 1,
    servers: Annotated[int, typer.Option(
        help="Redfish machines per site on the mockup simulator (BIOS, firmware...)")] = 1,
    ipmi: Annotated[int, typer.Option(help="IPMI machines per site")] = 1,
    directory: StackDir = None,
) -> None:
    """Start the local stack and return once every site is online; writes the CLI config."""
    from edgeplane.dev.stack import LocalStack, plan_sites

    if sites < 1 or redfish + servers + ipmi < 1:
        raise typer.BadParameter("a stack needs at least one site with one machine")
    state = LocalStack(_stack_dir(directory), plan_sites(sites, redfish, ipmi, servers)).up()
    path = save_context("local", state.context)
    console.print(f"local stack up: API {state.api_url}, MQTT 127.0.0.1:{state.mqtt_port}, "
                  f"{sites} sites; CLI config written to {path}")
    console.print("try: edgeplane sites list; edgeplane rollout start --tag dev "
                  "--step 'power.ensure state=on' --wait; then edgeplane dev down")


@app.command("down")
def down(directory: StackDir = None) -> None:
    """Stop everything `edgeplane dev up` started."""
    from edgeplane.dev.stack import LocalStack, load_state

    path = _stack_dir(directory)
    if load_state(path) is None:
        console.print(f"no local stack in {path}")
        return
    LocalStack(path, []).down()
    console.print("local stack stopped")


@app.command("demo")
def demo(
    sites: Annotated[int, typer.Option(help="how many sites")] = 3,
    directory: StackDir = None,
) -> None:
    """Stack up, power on + PXE once on every machine of every site, result table, down."""
    from edgeplane.dev.demo import run_demo

    ok = run_demo(_stack_dir(directory) if directory else edgeplane_home() / "demo", sites)
    raise typer.Exit(0 if ok else 1)


@bmc.command("redfish")
def redfish(
    mockup: Annotated[Path | None, typer.Option(
        help="a DMTF mockup tree (default: the shipped public-rackmount1)")] = None,
    port: Annotated[list[int] | None, typer.Option(
        help="TCP port on 127.0.0.1 (repeat for one BMC per port)")] = None,
    username: Annotated[str, typer.Option()] = "admin",
    password: Annotated[str, typer.Option()] = "password",  # noqa: S107 - a simulator
    power_delay: Annotated[float, typer.Option(
        help="seconds before a power change reads back")] = 1.0,
    latency: Annotated[float, typer.Option(help="seconds added to every request")] = 0.0,
) -> None:
    """Serve stateful Redfish BMCs from a mockup until interrupted."""
    from edgeplane.dev.redfish_sim import BmcOptions, MockupError, serve

    logging.basicConfig(level=logging.INFO)
    options = BmcOptions(username=username, password=password, power_delay=power_delay,
                         latency=latency)
    try:
        serve(port or [8000], mockup, options)
    except (OSError, MockupError) as exc:
        raise typer.BadParameter(str(exc)) from None


@bmc.command("ipmi")
def ipmi(
    port: Annotated[int, typer.Option(help="UDP port on 127.0.0.1")] = 623,
    username: Annotated[str, typer.Option()] = "admin",
    password: Annotated[str, typer.Option()] = "password",  # noqa: S107 - a simulator
) -> None:
    """Serve one simulated IPMI BMC (pyghmi's BMC server) until interrupted."""
    from edgeplane.dev.ipmi_sim import serve

    logging.basicConfig(level=logging.INFO)
    console.print(f"IPMI BMC on 127.0.0.1:{port} (user {username})")
    serve(port, username=username, password=password)
