"""Field upgrades of the gateway: a new version installed beside the running one, tried
under the supervisor, kept if it proves healthy in time, else rolled back by itself
(docs/upgrades.md)."""
