"""The Edgeplane site gateway: one small process per site that runs plans on the BMCs."""

__version__ = "0.1.0"
