"""The site artifact cache: installer images, firmware packages and gateway wheels fetched
once per site over the WAN, checked against the digest the cloud signed, kept on the
gateway's disk within a bound (least recently used first out, never one in use), and served
to the site's BMCs over the site LAN (docs/artifacts.md).

``store`` keeps the files and decides what stays, ``fetch`` brings one over HTTP (resuming
what an earlier try left), ``server`` serves them on the LAN, ``site`` ties the three to a
site's configuration (``settings``).
"""
