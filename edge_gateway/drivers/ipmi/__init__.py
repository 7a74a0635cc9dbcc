"""The IPMI driver, on pyghmi's client (``pyghmi.ipmi.command.Command``): one module per
concern.

- ``link``: the BMC's session, shared per process and taken in turns, logins one at a time
  behind a ping (``ping``), pyghmi's lost wakeup closed (``wakeup``), its I/O thread kept
  from blocking in a receive (``receive``), each call in a worker thread under the driver's
  timeout, failures converted at one boundary (``errors``);
- ``tables``: pyghmi's words and IPMI's numbers <-> Edgeplane's enums and words;
- ``power`` (chassis control), ``boot`` (boot flags), ``inventory`` (device id, FRU 0,
  GUID), ``sensors`` (health from the SDR), ``sel`` (event log), ``mc`` (capabilities,
  cold reset): one hardware interface each (``IpmiPower`` implements ``PowerInterface``...);
- ``driver``: ``IpmiDriver``, the driver core composed with those parts.

Nothing of pyghmi leaves this package: its strings map to our enums through the tables and
its exceptions become ``BmcError`` and subclasses.
"""

from edge_gateway.drivers.ipmi.driver import IpmiDriver
from edge_gateway.drivers.ipmi.errors import convert_error
from edge_gateway.drivers.ipmi.link import DEFAULT_PORT, parse_address, wait_for_calls

__all__ = ["DEFAULT_PORT", "IpmiDriver", "convert_error", "parse_address", "wait_for_calls"]
