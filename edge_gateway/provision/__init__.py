"""Bare metal to an installed node: the machine's seed, its phone-home token, the settings
that hold the site's secrets (``[provision]``)."""
