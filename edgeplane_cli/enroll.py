"""``edgeplane sites enroll SITE --out DIR``: give a site its identity in AWS IoT Core and
write the bundle its gateway runs from (``site_bundle``); ``docs/enrol.md`` is the guide."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from edgeplane_cli import iot_registry, site_bundle
from edgeplane_cli.iot_registry import DEFAULT_PREFIX, Names, RegistryError
from edgeplane_cli.site_bundle import MQTT_PORT, Bundle, BundleError


@dataclass(frozen=True)
class Enrolled:
    config: Path
    endpoint: str
    certificate_id: str
    retired: list[str]
    thing: str


def enroll_site(iot: Any, site_id: str, out: Path, names: Names, plan_keys: list[str],
                ca_pem: str, machines: str, endpoint: str | None = None,
                port: int = MQTT_PORT) -> Enrolled:
    """Check everything, then: the thing, a key made here and a certificate issued for it,
    the policy and the thing attached to it, the bundle written, the site's other
    certificates retired. A failure before the bundle is written discards the new
    certificate; the old ones are retired only once the new bundle is complete."""
    iot_registry.check_deployment(iot, names)
    host = endpoint or iot_registry.data_endpoint(iot)
    bundle = Bundle(site_id, host, port, plan_keys, ca_pem, machines)
    bundle.config()  # refuses what the config cannot hold, before anything is created
    iot_registry.ensure_thing(iot, site_id, names)
    key = site_bundle.new_key()
    certificate = iot_registry.issue(iot, site_bundle.signing_request(key, site_id))
    try:
        if not site_bundle.is_for_key(certificate.pem, key):
            raise RegistryError(f"the certificate AWS IoT issued ({certificate.certificate_id})"
                                " is not for the key of the signing request")
        iot_registry.attach(iot, site_id, certificate, names)
        config = site_bundle.write(bundle, out, key, certificate.pem)
    except BaseException:
        iot_registry.discard(iot, site_id, certificate, names)
        raise
    retired = iot_registry.retire_others(iot, site_id, certificate)
    return Enrolled(config, host, certificate.certificate_id, retired, site_id)


# The command's help: paragraphs, each one line (the terminal wraps them).
HELP = "\n\n".join([
    "Enrol a site in AWS IoT Core and write its gateway's bundle to DIR.",
    "Creates the site's thing (in the sites' group), makes a key pair here, has AWS IoT "
    "issue a certificate for it, attaches the sites' policy, and writes DIR/gateway.toml "
    "with the endpoint, the certificate, the key, the CA and the plan keys: `edge-gateway "
    "run --config DIR/gateway.toml` runs it as is. The private key is written only to DIR "
    "(0600), never sent anywhere.",
    "Enrolling a site again gives it a new certificate and deactivates the old one; the "
    "machines of DIR's bundle are kept unless --machines is given. The site is registered "
    "with the API apart (`edgeplane sites register`). Guide: docs/enrol.md.",
])


def enroll(
    site_id: Annotated[str, typer.Argument(metavar="SITE", help="the site's id: the thing's "
                                                                "name and MQTT client id")],
    out: Annotated[Path, typer.Option("--out", help="the bundle's folder (created 0700)")],
    plan_key: Annotated[list[str] | None, typer.Option(
        metavar="KEY", help="a public key (base64) the cloud signs plans with; repeatable "
                            "(a key being rotated in: both)")] = None,
    plan_key_secret: Annotated[str | None, typer.Option(
        metavar="SECRET", envvar="EDGEPLANE_PLAN_KEY_SECRET",
        help="and/or: the deployment's plan-signing key in Secrets Manager (the stack's "
             "PlanSigningKeySecret); its public half is pinned, nothing else is kept")] = None,
    machines: Annotated[Path | None, typer.Option(
        help="a TOML file of \\[\\[machines]] (and \\[classes.NAME]) tables for the bundle; "
             "without it, those of DIR's earlier bundle are kept, or there are none and the "
             "operator adds them to DIR/gateway.toml")] = None,
    ca_file: Annotated[Path | None, typer.Option(
        help="the CA the endpoint's certificate is checked against (default: Amazon Root "
             "CA 1, from the certifi package, checked by its fingerprint)")] = None,
    prefix: Annotated[str, typer.Option(
        help="the deployment's names: <prefix>-site (thing type and policy), <prefix>-sites "
             "(thing group); a stage's stack uses edgeplane-<stage>")] = DEFAULT_PREFIX,
    thing_type: Annotated[str | None, typer.Option(help="instead of <prefix>-site")] = None,
    thing_group: Annotated[str | None, typer.Option(help="instead of <prefix>-sites")] = None,
    policy: Annotated[str | None, typer.Option(help="instead of <prefix>-site")] = None,
    region: Annotated[str | None, typer.Option(help="AWS region (default: the AWS "
                                                    "configuration's)")] = None,
    endpoint: Annotated[str | None, typer.Option(
        help="the host gateways connect to (default: the account's iot:Data-ATS endpoint; "
             "give it for a custom domain)")] = None,
    port: Annotated[int, typer.Option(min=1, max=65535)] = MQTT_PORT,
) -> None:
    import boto3

    defaults = Names.of(prefix)
    names = Names(thing_type or defaults.thing_type, thing_group or defaults.thing_group,
                  policy or defaults.policy)
    try:
        site_bundle.check_site_id(site_id)
        session = boto3.session.Session(region_name=region)
        keys = list(plan_key or [])
        if plan_key_secret:
            keys.append(_plan_key_from_secret(session, plan_key_secret))
        keys = list(dict.fromkeys(site_bundle.check_plan_keys(keys)))
        ca_pem = site_bundle.read_ca_file(ca_file) if ca_file else site_bundle.amazon_root_ca()
        machine_tables = site_bundle.read_machines(machines) if machines else \
            site_bundle.kept_machines(out / site_bundle.CONFIG)
        done = enroll_site(session.client("iot"), site_id, out, names, keys, ca_pem,
                           machine_tables or "", endpoint, port)
    except (BundleError, RegistryError) as exc:
        print(f"edgeplane: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    print(f"site {done.thing}: certificate {done.certificate_id} active, "
                  f"endpoint {done.endpoint}:{port}")
    if done.retired:
        print(f"deactivated the site's earlier certificate(s): {', '.join(done.retired)}")
    print(f"bundle: {done.config} (it holds the site's private key: copy it to the "
                  "site's gateway only)")


def _plan_key_from_secret(session: Any, secret_id: str) -> str:
    """The public half of the cloud's key in Secrets Manager (``secretsmanager:`` before
    the id, as the cloud's setting has it, is taken too)."""
    from botocore.exceptions import BotoCoreError, ClientError

    secret_id = secret_id.removeprefix("secretsmanager:")

    try:
        secret = session.client("secretsmanager").get_secret_value(SecretId=secret_id)
    except (BotoCoreError, ClientError) as exc:
        raise BundleError(f"--plan-key-secret {secret_id}: {exc}") from None
    pem = secret["SecretString"].encode() if "SecretString" in secret else \
        bytes(secret.get("SecretBinary", b""))
    return site_bundle.plan_key_of_pem(pem, f"secret {secret_id}")
