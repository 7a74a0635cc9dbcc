"""``edgeplane dev``: the local stack, its emulated BMCs, and the demo."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from edgeplane_cli.config import edgeplane_home, save_context
from edgeplane_cli.render import console

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
    fresh: Annotated[bool, typer.Option(
        "--fresh", help="start empty: delete what earlier runs stored")] = False,
    directory: StackDir = None,
) -> None:
    """Start the local stack and return once every site is online; writes the CLI config.

    The fleet's data (the store's tables, the broker's queued messages) is kept from one
    run to the next unless --fresh.
    """
    from edgeplane_dev.stack import LocalStack, plan_sites, store_dir

    if sites < 1 or redfish + servers + ipmi < 1:
        raise typer.BadParameter("a stack needs at least one site with one machine")
    stack = LocalStack(_stack_dir(directory), plan_sites(sites, redfish, ipmi, servers),
                       fresh=fresh)
    state = stack.up()
    path = save_context("local", state.context)
    console.print(f"local stack up: API {state.api_url}, MQTT 127.0.0.1:{state.mqtt_port}, "
                  f"{sites} sites; CLI config written to {path}")
    console.print(f"web console: {state.console_url} (sign in with a principal's token: "
                  "edgeplane principals create NAME --role operator)")
    if stack.resumed:
        console.print(f"the data of the last run is kept in {store_dir(stack.directory)} "
                      "(--fresh starts empty)")
    console.print("try: edgeplane sites list; edgeplane rollout start --tag dev "
                  "--step 'power.ensure state=on' --wait; then edgeplane dev down")


@app.command("down")
def down(
    purge: Annotated[bool, typer.Option(
        "--purge", help="also delete the stack's data (store, broker queues, logs)")] = False,
    directory: StackDir = None,
) -> None:
    """Stop everything `edgeplane dev up` started; its data stays for the next `up`."""
    from edgeplane_dev.stack import LocalStack, load_state

    path = _stack_dir(directory)
    if load_state(path) is None and not (purge and path.exists()):
        console.print(f"no local stack in {path}")
        return
    LocalStack(path, []).down(purge=purge)
    console.print(f"local stack stopped; {path} deleted" if purge else
                  f"local stack stopped; its data stays in {path} (--purge deletes it)")


@app.command("demo")
def demo(
    sites: Annotated[int, typer.Option(help="how many sites")] = 3,
    directory: StackDir = None,
) -> None:
    """Stack up, power on + PXE once on every machine of every site, result table, down."""
    from edgeplane_dev.demo import run_demo

    ok = run_demo(_stack_dir(directory) if directory else edgeplane_home() / "demo", sites)
    raise typer.Exit(0 if ok else 1)


@app.command("sim")
def sim(
    sites: Annotated[int, typer.Option(help="how many simulated sites (site-00001...)")] = 100,
    machines: Annotated[int, typer.Option(
        help="simulated machines per site (half Redfish, half IPMI)")] = 4,
    port: Annotated[int | None, typer.Option(
        help="MQTT port on 127.0.0.1 (default: the broker of the running local stack)")] = None,
    max_parallel: Annotated[int, typer.Option(
        help="machines a site works on at once (threads per plan)")] = 4,
    processes: Annotated[int, typer.Option(
        help="processes to spread the sites over (one per core is plenty)")] = 1,
    plan_key: Annotated[list[str] | None, typer.Option(
        metavar="KEY",
        help="a public key (base64) the sites believe plans signed with; repeatable "
             "(default: the running local stack's)")] = None,
    directory: StackDir = None,
) -> None:
    """Run N simulated sites, each the real gateway core on simulated BMCs, until Ctrl-C."""
    import signal
    import time

    from edgeplane_dev.fleet_sim import SMALL_THREAD_STACK, FleetSimulator, raise_open_file_limit

    if sites < 1 or machines < 1:
        raise typer.BadParameter("a fleet needs at least one site with one machine")
    if processes < 1:
        raise typer.BadParameter("--processes must be at least 1")
    pki = None
    plan_keys = list(plan_key or [])
    if port is None:
        from edgeplane_dev.processes import is_running
        from edgeplane_dev.stack import load_state, pinned_keys, pki_dir

        path = _stack_dir(directory)
        state = load_state(path)
        broker = state.processes.get("mosquitto") if state else None
        if state is None or broker is None or not is_running(broker):
            raise typer.BadParameter(f"no local stack is running from {path}: start one "
                                     "with `edgeplane dev up`, or give --port")
        port = state.mqtt_port
        pki = pki_dir(path)  # the stack's broker wants each site's certificate
        plan_keys = plan_keys or pinned_keys(path)  # and its cloud signs their plans
    if not plan_keys:
        raise typer.BadParameter("--plan-key: the sites run only signed plans; give the "
                                 "public key of the cloud that signs them")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("edge_gateway").setLevel(logging.ERROR)  # per-site noise, x N sites
    limit = raise_open_file_limit()
    if sites + 64 > limit:
        console.print(f"[yellow]{sites} sites need {sites} sockets; the open-file limit is "
                      f"{limit} (raise it with `ulimit -n`)[/yellow]")
    fleet = FleetSimulator(port, sites, machines, max_parallel=max_parallel,
                           thread_stack_size=SMALL_THREAD_STACK, processes=processes,
                           pki=pki, plan_keys=plan_keys)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop cleanly, as on Ctrl-C
    console.print(f"starting {sites} simulated sites ({machines} machines each) against "
                  f"127.0.0.1:{port}; Ctrl-C stops them")
    started = time.monotonic()
    try:
        fleet.start(timeout=None)
        fleet.wait_connected(timeout=max(60.0, sites / 100),
                             progress=lambda stats: console.print(stats.line()))
        console.print(f"all {sites} sites connected in {time.monotonic() - started:.1f} s")
        last = ""
        while True:
            time.sleep(5)
            line = fleet.stats().line()
            if line != last:
                console.print(line)
                last = line
    except KeyboardInterrupt:
        pass
    except TimeoutError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    finally:
        console.print("stopping the simulated sites...")
        fleet.stop()
    console.print("simulated sites stopped")


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
    from edgeplane_dev.redfish_sim import BmcOptions, MockupError, serve

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
    from edgeplane_dev.ipmi_sim import serve

    logging.basicConfig(level=logging.INFO)
    console.print(f"IPMI BMC on 127.0.0.1:{port} (user {username})")
    serve(port, username=username, password=password)
