"""Drivers claim exactly the capabilities whose interfaces they implement.

A driver class is composed of hardware interfaces (``edge_gateway.drivers.interfaces``); its
``capabilities`` are derived from them. These tests check each driver class against what it
really implements, method by method, and that the check catches a driver that claims more.
No BMC is needed: everything here is about the classes.
"""

from __future__ import annotations

import abc
import inspect
import typing

import pytest

from edge_gateway.config import MachineConfig
from edge_gateway.drivers import base
from edge_gateway.drivers.base import BmcCredentials, BootOverride, Driver, MachineInfo, interface
from edge_gateway.drivers.interfaces import INTERFACES, BiosInterface
from edge_gateway.drivers.ipmi import IpmiDriver
from edge_gateway.drivers.redfish import RedfishDriver
from edge_gateway.errors import GatewayError, UnsupportedError
from edge_gateway.pacing import BmcPacer, PacedDriver
from edge_gateway.tasks import TaskContext, run_task
from edgeplane.protocol import BmcProtocol, Capability, PowerState
from edgeplane_dev.simulated_driver import SimulatedDriver, SimulatedMachine

DRIVERS = [RedfishDriver, IpmiDriver, SimulatedDriver]
EXPECTED = {
    RedfishDriver: frozenset(Capability),
    IpmiDriver: frozenset({Capability.POWER, Capability.BOOT, Capability.INVENTORY,
                           Capability.HEALTH, Capability.SEL, Capability.BMC_RESET}),
    SimulatedDriver: frozenset(Capability),
}
CORE = {"protocol", "capabilities", "address", "machine_capabilities", "describe", "close"}


def implemented_by(cls: type) -> frozenset[Capability]:
    """The capabilities whose interface ``cls`` subclasses and whose every method resolves,
    on ``cls``, to a concrete one from a class implementing that interface."""
    found = set()
    for capability, kind in INTERFACES.items():
        if issubclass(cls, kind) and all(_concrete(cls, kind, name)
                                         for name in kind.__abstractmethods__):
            found.add(capability)
    return frozenset(found)


def _concrete(cls: type, kind: type, name: str) -> bool:
    owner = next(c for c in cls.__mro__ if name in vars(c))
    method = vars(owner)[name]
    return (owner is not kind and issubclass(owner, kind)
            and not getattr(method, "__isabstractmethod__", False))


def claimed_but_missing(cls: type[Driver]) -> frozenset[Capability]:
    return cls.capabilities - implemented_by(cls)


def parts(cls: type) -> list[type]:
    """The classes a driver is composed of, besides the interfaces and the core."""
    plumbing = {*INTERFACES.values(), Driver, abc.ABC, object}
    return [c for c in cls.__mro__[1:] if c not in plumbing]


def own_names(cls: type) -> set[str]:
    return {name for name in vars(cls) if not name.startswith("__") and name != "_abc_impl"}


class CoreOnly(Driver):
    """The least a driver can be: the core's power and boot, nothing optional."""

    protocol = "core-only"

    def __init__(self) -> None:
        super().__init__(BmcCredentials("10.0.0.1", "admin", "pw"))
        self.power = PowerState.OFF

    def get_power_state(self) -> PowerState:
        return self.power

    def request_power_state(self, state: PowerState) -> None:
        self.power = state

    def request_graceful_shutdown(self) -> None:
        self.power = PowerState.OFF

    def request_power_cycle(self) -> None:
        self.power = PowerState.ON

    def get_boot_override(self) -> BootOverride:
        return BootOverride(target=None, mode=None)

    def set_boot_override(self, target, mode, firmware_mode=None) -> None:
        pass

    def describe(self) -> MachineInfo:
        return MachineInfo(protocol=self.protocol, capabilities=self.capabilities)


@pytest.mark.parametrize("driver", DRIVERS, ids=lambda cls: cls.__name__)
def test_declared_capabilities_are_the_implemented_ones(driver):
    assert not inspect.isabstract(driver)
    assert driver.capabilities == implemented_by(driver) == EXPECTED[driver]
    assert claimed_but_missing(driver) == frozenset()


@pytest.mark.parametrize("driver", DRIVERS, ids=lambda cls: cls.__name__)
def test_the_parts_of_a_driver_do_not_shadow_each_other(driver):
    seen: dict[str, type] = {}
    for part in parts(driver):
        for name in own_names(part):
            assert name not in seen, f"{part.__name__} and {seen[name].__name__} define {name}"
            seen[name] = part


def test_interfaces_share_no_method_names_with_each_other_or_the_core():
    seen: set[str] = set(CORE)
    for kind in INTERFACES.values():
        methods = set(kind.__abstractmethods__)
        assert methods and not methods & seen, f"{kind.__name__} reuses {methods & seen}"
        seen |= methods


def test_the_check_catches_a_driver_that_claims_what_it_lacks():
    liar = type("Liar", (IpmiDriver,), {})
    liar.capabilities = frozenset(Capability)  # what the class body may not say
    assert claimed_but_missing(liar) == {Capability.MEDIA, Capability.BIOS,
                                         Capability.FIRMWARE}


def test_a_driver_cannot_declare_its_capabilities():
    with pytest.raises(TypeError, match="follow from the interfaces it implements"):
        type("Declares", (IpmiDriver,), {"capabilities": frozenset(Capability)})


def test_an_interface_without_its_methods_gives_no_capability_and_no_driver():
    half = type("HalfBios", (BiosInterface, CoreOnly), {"get_bios": lambda self: None})
    assert inspect.isabstract(half)
    assert Capability.BIOS not in implemented_by(half)
    with pytest.raises(TypeError, match="set_bios_pending"):
        half()


def test_the_core_alone_has_power_and_boot():
    assert CoreOnly.capabilities == implemented_by(CoreOnly) == {Capability.POWER,
                                                                  Capability.BOOT}


def test_interface_lookup_gives_each_capability_its_interface():
    hints = [typing.get_type_hints(o) for o in typing.get_overloads(base.interface)]
    assert {typing.get_args(h["capability"])[0]: h["return"] for h in hints} == INTERFACES


def test_an_interface_is_picked_by_capability_through_a_wrapper():
    pacer = BmcPacer(min_interval=0.0)
    paced = PacedDriver(CoreOnly(), pacer)
    power = interface(paced, Capability.POWER)
    power.request_power_state(PowerState.ON)
    assert power.get_power_state() == PowerState.ON
    assert pacer.calls == 2  # the interface's calls still take their turns with the BMC
    with pytest.raises(UnsupportedError, match="the core-only driver has no bios capability"):
        interface(paced, Capability.BIOS)


def test_a_task_needs_its_interface():
    config = MachineConfig(id="m1", protocol=BmcProtocol.REDFISH, poll_interval=0.01,
                           min_interval=0.0, credentials=BmcCredentials("10.0.0.1", "a", "b"))
    with pytest.raises(GatewayError, match="cannot do bios.read .needs bios."):
        run_task("bios.read", TaskContext(CoreOnly(), config), {})
    outcome = run_task("power.ensure", TaskContext(CoreOnly(), config), {"state": "on"})
    assert outcome.changed


def test_machine_capabilities_are_within_the_declared_ones():
    driver = SimulatedDriver(BmcCredentials("10.0.0.1", "a", "b"), SimulatedMachine())
    assert driver.machine_capabilities() <= SimulatedDriver.capabilities
    assert driver.describe().capabilities == SimulatedDriver.capabilities
