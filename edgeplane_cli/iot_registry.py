"""A site in AWS IoT Core's registry: its thing (named by the site id, of the sites' thing type,
in their group) and its certificate (issued for a key that stays with the operator, with the
sites' policy attached).

The type, group and policy are the deployment's (``infra/device.py``); enrolling creates
none of them, and stops, naming what is missing, before creating anything. A site has one
active certificate: enrolling it again attaches the new one, then detaches and deactivates
the old ones, so that a copied old bundle no longer connects.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

LOG = logging.getLogger(__name__)

DEFAULT_PREFIX = "edgeplane"
ENDPOINT_TYPE = "iot:Data-ATS"
INACTIVE = "INACTIVE"


class RegistryError(RuntimeError):
    """AWS IoT refused or lacks something; the message says what, and what to do."""


@dataclass(frozen=True)
class Names:
    """The deployment's names for the sites' thing type, thing group and IoT policy."""

    thing_type: str
    thing_group: str
    policy: str

    @classmethod
    def of(cls, prefix: str = DEFAULT_PREFIX) -> Names:
        """The stack's names: ``<prefix>-site``, ``<prefix>-sites``, ``<prefix>-site``
        (a stage's prefix is ``edgeplane-<stage>``)."""
        return cls(f"{prefix}-site", f"{prefix}-sites", f"{prefix}-site")


@dataclass(frozen=True)
class Certificate:
    certificate_id: str
    arn: str
    pem: str


def _call(what: str, operation: Any, **kwargs: Any) -> Any:
    """One IoT call; its botocore error becomes a RegistryError saying what failed."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return operation(**kwargs)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise RegistryError(f"{what}: {error.get('Code', 'error')}: "
                            f"{error.get('Message') or exc}") from None
    except BotoCoreError as exc:
        raise RegistryError(f"{what}: {exc}") from None


def _missing(exc: Exception) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError) and \
        exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException"


def check_deployment(iot: Any, names: Names) -> None:
    """The thing type, group and policy exist; else RegistryError naming each missing."""
    from botocore.exceptions import ClientError

    missing = []
    for kind, name, operation, key in (
            ("thing type", names.thing_type, iot.describe_thing_type, "thingTypeName"),
            ("thing group", names.thing_group, iot.describe_thing_group, "thingGroupName"),
            ("IoT policy", names.policy, iot.get_policy, "policyName")):
        try:
            operation(**{key: name})
        except ClientError as exc:
            if not _missing(exc):
                raise RegistryError(f"reading the {kind} {name!r}: {exc}") from None
            missing.append(f"{kind} {name!r}")
    if missing:
        raise RegistryError(f"{', '.join(missing)} not found in this account and region: "
                            "deploy the stack first, or give the names it uses "
                            "(--prefix edgeplane-<stage>, or --thing-type/--thing-group/"
                            "--policy)")


def data_endpoint(iot: Any) -> str:
    """The account's ATS data endpoint: where gateways connect."""
    answer = _call("describing the IoT data endpoint", iot.describe_endpoint,
                   endpointType=ENDPOINT_TYPE)
    return str(answer["endpointAddress"])


def ensure_thing(iot: Any, site_id: str, names: Names) -> None:
    """The site's thing, of the sites' type, in their group (created if it is not)."""
    from botocore.exceptions import ClientError

    try:
        thing = iot.describe_thing(thingName=site_id)
    except ClientError as exc:
        if not _missing(exc):
            raise RegistryError(f"reading thing {site_id!r}: {exc}") from None
        _call(f"creating thing {site_id!r}", iot.create_thing, thingName=site_id,
              thingTypeName=names.thing_type)
        LOG.info("thing %s created", site_id)
    else:
        if thing.get("thingTypeName") != names.thing_type:
            raise RegistryError(f"thing {site_id!r} exists with thing type "
                                f"{thing.get('thingTypeName')!r}, not {names.thing_type!r}: "
                                "it is not a site of this deployment")
    _call(f"adding thing {site_id!r} to group {names.thing_group!r}",
          iot.add_thing_to_thing_group, thingGroupName=names.thing_group, thingName=site_id)


def issue(iot: Any, csr_pem: str) -> Certificate:
    """An active certificate for the request's key (the key itself never leaves here)."""
    answer = _call("issuing the site's certificate", iot.create_certificate_from_csr,
                   certificateSigningRequest=csr_pem, setAsActive=True)
    return Certificate(answer["certificateId"], answer["certificateArn"],
                       answer["certificatePem"])


def attach(iot: Any, site_id: str, certificate: Certificate, names: Names) -> None:
    _call(f"attaching policy {names.policy!r}", iot.attach_policy, policyName=names.policy,
          target=certificate.arn)
    _call(f"attaching the certificate to thing {site_id!r}", iot.attach_thing_principal,
          thingName=site_id, principal=certificate.arn)


def retire_others(iot: Any, site_id: str, keep: Certificate) -> list[str]:
    """Detach every other certificate from the site's thing and deactivate it (unless
    another thing still uses it); returns the ids of those deactivated."""
    principals: list[str] = []
    token: str | None = None
    while True:
        page = _call(f"listing the certificates of thing {site_id!r}",
                     iot.list_thing_principals, thingName=site_id,
                     **({"nextToken": token} if token else {}))
        principals += page.get("principals", [])
        token = page.get("nextToken")
        if not token:
            break
    retired = []
    for arn in principals:
        if arn == keep.arn or ":cert/" not in arn:
            continue
        certificate_id = arn.rsplit("/", 1)[-1]
        _call(f"detaching certificate {certificate_id}", iot.detach_thing_principal,
              thingName=site_id, principal=arn)
        others = [name for name in _call(f"listing the things of certificate "
                                         f"{certificate_id}", iot.list_principal_things,
                                         principal=arn).get("things", [])
                  if name != site_id]
        if others:
            LOG.warning("certificate %s is also attached to %s: left active", certificate_id,
                        ", ".join(others))
            continue
        _call(f"deactivating certificate {certificate_id}", iot.update_certificate,
              certificateId=certificate_id, newStatus=INACTIVE)
        retired.append(certificate_id)
    return retired


def discard(iot: Any, site_id: str, certificate: Certificate, names: Names) -> None:
    """Undo ``issue`` and ``attach`` as far as they went, after a failure: no active
    certificate is left whose key nobody has. Best effort; what fails is logged."""
    steps: tuple[tuple[str, Callable[[], Any]], ...] = (
        ("detach it from the thing", lambda: iot.detach_thing_principal(
            thingName=site_id, principal=certificate.arn)),
        ("detach the policy", lambda: iot.detach_policy(policyName=names.policy,
                                                         target=certificate.arn)),
        ("deactivate it", lambda: iot.update_certificate(
            certificateId=certificate.certificate_id, newStatus=INACTIVE)),
        ("delete it", lambda: iot.delete_certificate(
            certificateId=certificate.certificate_id)),
    )
    for what, step in steps:
        try:
            step()
        except Exception as exc:  # botocore raises many kinds; go on with the next step
            if not _missing(exc):
                LOG.warning("certificate %s: could not %s: %s", certificate.certificate_id,
                            what, exc)
