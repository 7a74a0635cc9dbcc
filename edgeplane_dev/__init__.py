"""The local stack: every part of Edgeplane on one machine, on 127.0.0.1 and free ports."""
