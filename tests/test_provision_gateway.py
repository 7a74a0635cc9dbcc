"""The gateway's side of provisioning: the NoCloud seed (read back by isoinfo, an
independent ISO 9660 reader), the ``[provision]`` settings, the phone-home tokens, the LAN
server's seed and phone-home routes under hostile input, and the os.seed and
os.wait_installed tasks on the Redfish simulator (the test plays the installed system and
POSTs its facts), then 50 machines waiting at once."""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import platform
import shutil
import socket
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from edge_gateway.cache.settings import CacheSettings
from edge_gateway.cache.site import SiteCache
from edge_gateway.config import MachineConfig, MqttSettings, SiteConfig, parse_config
from edge_gateway.drivers import create_driver
from edge_gateway.drivers.base import BmcCredentials, interface
from edge_gateway.errors import BmcError, ConfigError, GatewayError
from edge_gateway.executor import PlanExecutor
from edge_gateway.provision.iso9660 import write_iso
from edge_gateway.provision.seed import (
    SeedSpec,
    StaticNetwork,
    build_seed,
    phone_home_url,
    read_seed,
)
from edge_gateway.provision.settings import parse_provision
from edge_gateway.provision.site import Provisioning, open_provisioning
from edge_gateway.provision.tokens import TokenStore
from edge_gateway.tasks import TaskContext, recheck_task, run_task
from edgeplane.protocol import (
    BmcProtocol,
    BootMode,
    BootTarget,
    Capability,
    MachineState,
    Plan,
    PlanStep,
    StepResult,
    StepState,
    now,
)
from edgeplane_dev.ports import LOOPBACK
from edgeplane_dev.redfish_sim import BmcOptions
from edgeplane_dev.simulated_driver import SimulatedDriver, SimulatedMachine
from tests.support import wait_until
from tests.test_artifact_cache import FAST, content, lan, machine_config, origin, put

__all__ = ["origin"]  # the origin fixture, shared with the cache's tests

K3S_TOKEN = "K10abc123::server:0123456789abcdef"  # noqa: S105 - a test's join token
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0ZXN0a2V5 ops@example"
FACTS = {"os": "Ubuntu 24.04.1 LTS", "kernel": "6.8.0-45-generic",
         "k3s_version": "k3s version v1.31.1+k3s1", "node_name": "node-1"}


def spec(**changes) -> SeedSpec:
    values = dict(machine_id="srv-1", hostname="node-1", instance_id="srv-1-abcdefgh",
                  phone_home_url=f"http://10.0.0.2:8080/p/{'A' * 32}",
                  k3s_url="https://k3s.example.net:6443", k3s_token=K3S_TOKEN, ssh_keys=(KEY,))
    values.update(changes)
    return SeedSpec(**values)


def user_data(files: dict[str, bytes]) -> dict:
    text = files["user-data"].decode()
    assert text.startswith("#cloud-config\n")
    return json.loads(text.split("\n", 1)[1])  # JSON: YAML that cloud-init reads


# --- the seed ----------------------------------------------------------------------------


def test_a_seed_reads_back_with_its_three_files():
    files = read_seed(build_seed(spec(network=StaticNetwork("10.0.0.5/24", "10.0.0.1",
                                                            ("10.0.0.1", "1.1.1.1")))))
    assert sorted(files) == ["meta-data", "network-config", "user-data"]
    assert files["meta-data"] == b'instance-id: "srv-1-abcdefgh"\nlocal-hostname: "node-1"\n'
    document = user_data(files)
    assert document["hostname"] == "node-1"
    assert document["ssh_authorized_keys"] == [KEY]
    env = next(f for f in document["write_files"] if f["path"] == "/etc/edgeplane/k3s.env")
    assert env["permissions"] == "0600"
    assert env["content"] == f"K3S_URL=https://k3s.example.net:6443\nK3S_TOKEN={K3S_TOKEN}\n"
    assert document["edgeplane_phone_home"] == {"url": f"http://10.0.0.2:8080/p/{'A' * 32}"}
    assert phone_home_url(files) == f"http://10.0.0.2:8080/p/{'A' * 32}"
    assert document["runcmd"][-1] == ["/usr/local/sbin/edgeplane-phone-home",
                                      f"http://10.0.0.2:8080/p/{'A' * 32}"]
    nic = json.loads(files["network-config"])["ethernets"]["nic0"]
    assert nic == {"match": {"name": "e*"}, "dhcp4": False, "addresses": ["10.0.0.5/24"],
                   "routes": [{"to": "default", "via": "10.0.0.1"}],
                   "nameservers": {"addresses": ["10.0.0.1", "1.1.1.1"]}}


def test_without_an_address_the_first_nic_takes_dhcp():
    network = json.loads(read_seed(build_seed(spec()))["network-config"])
    assert network == {"version": 2, "ethernets": {"nic0": {"match": {"name": "e*"},
                                                            "dhcp4": True}}}


def test_a_gateway_serving_https_gives_the_node_its_certificate():
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    files = read_seed(build_seed(spec(phone_home_url=f"https://10.0.0.2:8443/p/{'A' * 32}",
                                      phone_home_ca=pem)))
    written = {f["path"]: f["content"] for f in user_data(files)["write_files"]}
    assert written["/etc/edgeplane/gateway-ca.pem"] == pem
    assert "--cacert /etc/edgeplane/gateway-ca.pem" in \
        written["/usr/local/sbin/edgeplane-phone-home"]


def test_the_same_spec_gives_the_same_bytes():
    assert build_seed(spec()) == build_seed(spec())
    assert build_seed(spec()) != build_seed(spec(hostname="node-2"))


@pytest.fixture(scope="module")
def isoinfo() -> str:
    found = shutil.which("isoinfo")
    if found is None:
        pytest.skip("isoinfo (apt genisoimage; scripts/bootstrap-system.sh) is not installed")
    return found


def test_isoinfo_reads_the_seed_as_a_cidata_volume(tmp_path, isoinfo):
    image = tmp_path / "seed.iso"
    seed = build_seed(spec())
    image.write_bytes(seed)
    described = subprocess.run([isoinfo, "-d", "-i", str(image)], capture_output=True,
                               text=True, check=True).stdout
    assert "Volume id: CIDATA" in described
    assert f"Volume size is: {len(seed) // 2048}" in described
    listing = subprocess.run([isoinfo, "-l", "-i", str(image)], capture_output=True,
                             text=True, check=True).stdout
    assert {"META-DATA.;1", "NETWORK-CONFIG.;1", "USER-DATA.;1"} <= set(listing.split())
    for name, data in read_seed(seed).items():
        extracted = subprocess.run([isoinfo, "-i", str(image), "-x", f"/{name.upper()}.;1"],
                                   capture_output=True, check=True).stdout
        assert extracted == data, name


def _truncated_root(image: bytes) -> bytes:
    pvd = bytearray(image)
    root_size = 16 * 2048 + 156 + 10
    pvd[root_size:root_size + 4] = (10**6).to_bytes(4, "little")
    return bytes(pvd)


@pytest.mark.parametrize("make, error", [
    (lambda seed: seed[:4096], "too short for an ISO 9660 volume descriptor"),
    (lambda seed: b"\0" * 40960, "sector 16 is not an ISO 9660 primary volume descriptor"),
    (lambda seed: seed + b"\0" * (5 * 1024 * 1024), "larger than"),
    (lambda seed: write_iso("OTHER", {"meta-data": b"", "user-data": b""}),
     "volume identifier 'OTHER' is not CIDATA"),
    (lambda seed: write_iso("CIDATA", {"meta-data": b"x"}), "seed has no user-data"),
    (_truncated_root, "root directory: extent at sector 20 of 1000000 bytes lies outside"),
    (lambda seed: "not bytes", "an ISO image is bytes, not str"),
])
def test_read_seed_refuses_what_is_not_a_seed_saying_why(make, error):
    with pytest.raises(ValueError, match=error):
        read_seed(make(build_seed(spec())))


@pytest.mark.parametrize("changes, error", [
    ({"hostname": "-node"}, "hostname '-node' is not a DNS name"),
    ({"k3s_url": "http://k3s:6443"}, "k3s URL 'http://k3s:6443' is not a https URL"),
    ({"k3s_token": "abc'; rm -rf /"}, "k3s token must be 1-512 printable characters"),
    ({"ssh_keys": ("not a key",)}, "SSH key 1 is not one OpenSSH public key line"),
    ({"phone_home_url": "ftp://x/p/1"}, "phone-home URL 'ftp://x/p/1' is not a http or https"),
    ({"network": None, "instance_id": "a b"}, "instance id 'a b' is not"),
])
def test_a_seed_spec_refuses_values_unfit_for_a_root_script(changes, error):
    with pytest.raises(ValueError, match=error):
        spec(**changes)


def test_a_static_network_is_checked():
    with pytest.raises(ValueError, match="address '10.0.0.5' has no prefix length"):
        StaticNetwork("10.0.0.5")
    with pytest.raises(ValueError, match="gateway fe80::1 is not an IPv4 address"):
        StaticNetwork("10.0.0.5/24", "fe80::1")
    with pytest.raises(ValueError, match="dns server 'x' is not an IP address"):
        StaticNetwork("10.0.0.5/24", dns=("x",))


# --- the [provision] settings ------------------------------------------------------------


def secrets_in(directory: Path, mode: int = 0o600) -> None:
    token = directory / "k3s.token"
    token.write_text(K3S_TOKEN + "\n")
    token.chmod(mode)
    (directory / "authorized_keys").write_text(f"# operators\n{KEY}\n\n")


PROVISION = {"k3s_url": "https://k3s.example.net:6443", "k3s_token_file": "k3s.token",
             "ssh_authorized_keys_file": "authorized_keys"}


def test_provision_settings_read_the_secrets_from_their_files(tmp_path):
    secrets_in(tmp_path)
    settings = parse_provision(PROVISION, tmp_path, "site.toml", has_cache=True)
    assert settings is not None
    secrets = settings.secrets()
    assert (secrets.k3s_url, secrets.k3s_token, secrets.ssh_keys) == \
        ("https://k3s.example.net:6443", K3S_TOKEN, (KEY,))
    assert K3S_TOKEN not in repr(secrets)
    (tmp_path / "k3s.token").write_text("K10rotated::server:1\n")  # read again, no restart
    assert settings.secrets().k3s_token == "K10rotated::server:1"


@pytest.mark.parametrize("raw, has_cache, error", [
    (PROVISION, False, r"\[provision\] needs a \[cache\] table"),
    ({**PROVISION, "k3s_token": "x"}, True, r"unknown setting\(s\) k3s_token"),
    ({"k3s_url": "https://k3s:6443"}, True, "k3s_token_file is required"),
    ({**PROVISION, "k3s_url": "http://k3s:6443"}, True, "k3s URL 'http://k3s:6443'"),
    ({**PROVISION, "k3s_token_file": "missing"}, True, "cannot be read: No such file"),
])
def test_provision_settings_refuse_what_is_wrong(tmp_path, raw, has_cache, error):
    secrets_in(tmp_path)
    with pytest.raises(ConfigError, match=error):
        parse_provision(raw, tmp_path, "site.toml", has_cache=has_cache)


def test_a_token_file_readable_by_others_is_refused(tmp_path):
    secrets_in(tmp_path, mode=0o644)
    with pytest.raises(ConfigError, match="readable by others .mode 644.*chmod 600"):
        parse_provision(PROVISION, tmp_path, "site.toml", has_cache=True)


def test_the_site_config_takes_provision_only_with_a_cache(tmp_path):
    secrets_in(tmp_path)
    base = {"site": "shop-1", "trust": {"plan_keys": [
        "6OW5K9Mok9014418VclQ7M0WplhdiG9uhfMSxF2rn0I="]}, "provision": PROVISION}
    with pytest.raises(ConfigError, match="needs a \\[cache\\] table"):
        parse_config(base, tmp_path, "site.toml")
    config = parse_config({**base, "cache": {"directory": "cache", "max_size": "1MiB",
                                             "listen": LOOPBACK, "port": 0}},
                          tmp_path, "site.toml")
    assert config.provision is not None
    assert config.cache is not None
    provisioning = open_provisioning(config.provision, config.journal, config.cache.tls_cert)
    assert provisioning is not None
    try:
        assert stat.S_IMODE(os.stat(tmp_path / "shop-1.journal.db.provision").st_mode) == 0o600
    finally:
        provisioning.close()


# --- tokens ------------------------------------------------------------------------------


def test_a_machine_keeps_its_unused_token_across_a_restart_and_uses_it_once(tmp_path):
    path = tmp_path / "tokens.db"
    store = TokenStore(path)
    token = store.token_for("srv-1")
    assert len(token) == 32 and token != store.token_for("srv-2")
    store.set_seed(token, b"seed")
    store.close()
    store = TokenStore(path)  # the gateway restarted
    try:
        assert store.token_for("srv-1") == token
        assert store.seed(token) == b"seed"
        assert store.phone_home(token, FACTS) == "srv-1"
        assert store.phone_home(token, FACTS) is None  # once
        assert store.seed(token) is None
        latest = store.latest("srv-1")
        assert latest is not None and latest.facts == FACTS and token not in repr(latest)
        assert store.token_for("srv-1") != token  # a new install, a new token
    finally:
        store.close()


# --- the LAN routes ----------------------------------------------------------------------


@pytest.fixture
def site(tmp_path) -> Iterator[SiteCache]:
    secrets_in(tmp_path)
    settings = parse_provision(PROVISION, tmp_path, "site.toml", has_cache=True)
    assert settings is not None
    provisioning = Provisioning(settings, TokenStore(tmp_path / "tokens.db"))
    cache = SiteCache(CacheSettings(directory=tmp_path / "cache", max_bytes=10**7,
                                    listen=LOOPBACK, port=0, advertise=LOOPBACK,
                                    max_clients=4), provisioning=provisioning)
    cache.start()
    yield cache
    cache.stop()
    provisioning.close()


def provisioning_of(cache: SiteCache) -> Provisioning:
    assert isinstance(cache.provisioning, Provisioning)
    return cache.provisioning


def post(cache: SiteCache, path: str, body: bytes,
         headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(LOOPBACK, cache.port, timeout=10)
    try:
        connection.request("POST", path, body=body, headers={
            "Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_the_seed_is_served_until_the_machine_phones_home(site):
    prepared = provisioning_of(site).prepare("srv-1", "node-1", None, site.base_url)
    path = urlsplit(prepared.seed_url).path
    status, headers, body = lan(site, "GET", path)
    assert status == 200 and read_seed(body)["meta-data"].startswith(
        f'instance-id: "{prepared.instance_id}"'.encode())
    assert phone_home_url(read_seed(body)) == prepared.phone_home_url
    status, headers, part = lan(site, "GET", path, {"Range": "bytes=32768-32773"})
    assert (status, headers["Content-Range"], part) == \
        (206, f"bytes 32768-32773/{len(body)}", body[32768:32774])
    assert post(site, urlsplit(prepared.phone_home_url).path,
                json.dumps(FACTS).encode())[0] == 204
    assert lan(site, "GET", path)[0] == 404
    assert lan(site, "HEAD", path)[0] == 404


@pytest.mark.parametrize("body, headers, status, said", [
    (json.dumps(FACTS).encode(), {}, 204, b""),
    (b"{" * 5000, {}, 413, b"larger than 4096"),
    (b"not json", {}, 400, b"body is not JSON"),
    (json.dumps([1]).encode(), {}, 400, b"body is a JSON list, not an object"),
    (json.dumps({**FACTS, "extra": "x"}).encode(), {}, 400, b"unknown field(s) 'extra'"),
    (json.dumps({"os": "x"}).encode(), {}, 400, b"lacks kernel, k3s_version, node_name"),
    (json.dumps({**FACTS, "kernel": "k" * 129}).encode(), {}, 400,
     b"kernel 'kkk"),
    (json.dumps({**FACTS, "os": 7}).encode(), {}, 400, b"os 7 is not a string"),
    (json.dumps(FACTS).encode(), {"Content-Type": "text/plain"}, 400,
     b"Content-Type 'text/plain' is not application/json"),
])
def test_phone_home_takes_facts_and_refuses_hostile_bodies(site, body, headers, status, said):
    prepared = provisioning_of(site).prepare("srv-1", "node-1", None, site.base_url)
    answer = post(site, urlsplit(prepared.phone_home_url).path, body, headers)
    assert answer[0] == status and said in answer[1], answer
    latest = provisioning_of(site).tokens.latest("srv-1")
    assert latest is not None and latest.facts == (FACTS if status == 204 else None)


def test_phone_home_with_an_unknown_or_used_token_is_404(site):
    prepared = provisioning_of(site).prepare("srv-1", "node-1", None, site.base_url)
    path = urlsplit(prepared.phone_home_url).path
    assert post(site, "/p/" + "B" * 32, json.dumps(FACTS).encode())[0] == 404
    assert post(site, path, json.dumps(FACTS).encode())[0] == 204
    assert post(site, path, json.dumps({**FACTS, "node_name": "evil"}).encode())[0] == 404
    latest = provisioning_of(site).tokens.latest("srv-1")
    assert latest is not None and latest.facts == FACTS
    assert post(site, "/p/short", b"{}")[0] == 404


def test_phone_home_without_a_content_length_is_refused(site):
    prepared = provisioning_of(site).prepare("srv-1", "node-1", None, site.base_url)
    with socket.create_connection((LOOPBACK, site.port), timeout=10) as sock:
        sock.sendall(f"POST {urlsplit(prepared.phone_home_url).path} HTTP/1.1\r\nHost: x\r\n"
                     "Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
                     "5\r\n{...}\r\n0\r\n\r\n".encode())
        answer = sock.makefile("rb").read()  # the server closes: the body was not read
    assert answer.startswith(b"HTTP/1.1 400") and b"needs a Content-Length" in answer


def test_slow_phone_home_clients_cannot_take_more_than_the_client_limit(site):
    """Four clients that promise a body and never send it hold the four slots; a fifth
    request is answered 503 at once; once they go, the server answers again."""
    prepared = provisioning_of(site).prepare("srv-1", "node-1", None, site.base_url)
    path = urlsplit(prepared.phone_home_url).path
    stalled = []
    for _ in range(4):
        sock = socket.create_connection((LOOPBACK, site.port), timeout=10)
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                     "Content-Type: application/json\r\n\r\n{".encode())
        stalled.append(sock)
    seed = urlsplit(prepared.seed_url).path
    try:
        wait_until(lambda: lan(site, "HEAD", seed)[0] == 503)
    finally:
        for sock in stalled:
            sock.close()
    wait_until(lambda: lan(site, "HEAD", seed)[0] == 200)
    assert post(site, path, json.dumps(FACTS).encode())[0] == 204


def test_a_machines_installer_name_counts_its_own_reads(site, origin):
    artifact = put(origin, "installer.iso", content("iso"))
    site.ensure(artifact)
    one, two = (site.machine_url(artifact, m) for m in ("srv-1", "srv-2"))
    assert one != two and one.endswith(".iso") and two.endswith(".iso")
    name = urlsplit(one).path.rsplit("/", 1)[1]
    assert site.reads.reads(artifact.sha256, name) is None
    assert lan(site, "HEAD", urlsplit(one).path)[0] == 200  # a HEAD is not a read
    assert site.reads.reads(artifact.sha256, name) is None
    status, _, body = lan(site, "GET", urlsplit(one).path, {"Range": "bytes=0-9"})
    assert (status, body) == (206, content("iso")[:10])
    reads = site.reads.reads(artifact.sha256, name)
    assert reads is not None and reads.count == 1
    assert site.reads.read_since(artifact.sha256, name, reads.last_at)
    assert not site.reads.read_since(artifact.sha256, name, reads.last_at + 1)
    assert site.reads.reads(artifact.sha256, urlsplit(two).path.rsplit("/", 1)[1]) is None


def test_the_seeds_phone_home_script_posts_this_systems_facts(site, tmp_path):
    """The script the seed installs, run here with sh and curl as the installed system
    would run it: the gateway takes the facts it sends."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    prepared = provisioning_of(site).prepare("srv-1", "node-1", None, site.base_url)
    files = read_seed(provisioning_of(site).seed(prepared.token) or b"")
    script = next(f["content"] for f in user_data(files)["write_files"]
                  if f["path"] == "/usr/local/sbin/edgeplane-phone-home")
    (tmp_path / "phone-home").write_text(script)
    subprocess.run(["sh", str(tmp_path / "phone-home"), phone_home_url(files)], check=True,
                   timeout=60, capture_output=True)
    latest = provisioning_of(site).tokens.latest("srv-1")
    assert latest is not None and latest.facts is not None
    assert latest.facts["kernel"] == platform.release()
    assert latest.facts["k3s_version"] == "none"  # no k3s on this machine
    assert latest.facts["node_name"] == socket.gethostname()[:128]


# --- the tasks on the Redfish simulator --------------------------------------------------


@pytest.fixture
def bmc(redfish_bmcs):
    sim = redfish_bmcs.fresh(FAST)
    config = machine_config(sim.url)
    driver = create_driver(BmcProtocol.REDFISH, config.credentials, timeout=5)
    yield driver, config, sim
    driver.close()


class FakeClock:
    """Seconds that pass when a task sleeps (plus a sliver of real time for the BMC)."""

    def __init__(self, on_sleep: Callable[[float], None] = lambda _: None) -> None:
        self.now = 0.0
        self.on_sleep = on_sleep

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        threading.Event().wait(0.01)
        self.on_sleep(self.now)


def test_os_seed_inserts_the_seed_into_the_removable_slot_once(site, bmc):
    driver, config, sim = bmc
    ctx = TaskContext(driver, config, artifacts=site)
    first = run_task("os.seed", ctx, {"address": "10.0.0.5/24", "gateway": "10.0.0.1",
                                      "dns": "10.0.0.1,1.1.1.1"})
    token = provisioning_of(site).tokens.token_for(config.id)
    assert first.changed and first.message.endswith("Floppy1")
    assert first.message.startswith("seed for m1 (10.0.0.5/24) in ")
    assert token not in json.dumps([first.message, first.data])
    slot = sim.bmc.resources.get(first.data["slot"])
    assert slot["Image"] == f"{site.base_url}/s/{token}/seed.iso" and slot["Inserted"]
    served = read_seed(provisioning_of(site).seed(token) or b"")
    assert json.loads(served["network-config"])["ethernets"]["nic0"]["addresses"] == \
        ["10.0.0.5/24"]
    again = run_task("os.seed", ctx, {"address": "10.0.0.5/24", "gateway": "10.0.0.1",
                                      "dns": "10.0.0.1,1.1.1.1"})
    assert (again.changed, again.data) == (False, first.data)
    assert provisioning_of(site).tokens.token_for(config.id) == token


def test_os_seed_refuses_a_gateway_without_an_address(site, bmc):
    driver, config, _ = bmc
    with pytest.raises(GatewayError, match="gateway and dns go with a static address"):
        run_task("os.seed", TaskContext(driver, config, artifacts=site), {"gateway": "10.0.0.1"})


def test_os_seed_without_provisioning_says_so(bmc):
    driver, config, _ = bmc
    with pytest.raises(GatewayError, match="does not provision machines"):
        run_task("os.seed", TaskContext(driver, config), {})


def phone_home(cache: SiteCache, machine: str, facts: dict[str, str] = FACTS) -> int:
    token = provisioning_of(cache).tokens.token_for(machine)
    return post(cache, f"/p/{token}", json.dumps(facts).encode())[0]


def install_steps(site: SiteCache, origin, bmc) -> tuple[TaskContext, str, tuple]:
    """os.seed, the installer by digest, boot once from the CD, reset: the flow up to
    os.wait_installed. Returns its context, the installer's LAN path, the earlier results."""
    driver, config, _ = bmc
    artifact = put(origin, "installer.iso", content("installer"))
    params = {"image": artifact.url, "sha256": artifact.sha256, "size": artifact.size}
    ctx = TaskContext(driver, config, artifacts=site)
    run_task("os.seed", ctx, {})
    inserted = run_task("media.insert", ctx, params)
    run_task("boot.override", ctx, {"target": "cd", "mode": "once"})
    started = now()
    run_task("power.cycle", ctx, {})
    earlier = (StepResult("os.seed", StepState.SUCCEEDED),
               StepResult("power.cycle", StepState.SUCCEEDED, started_at=started))
    return ctx, urlsplit(inserted.data["image"]).path, earlier


def resets(sim) -> int:
    return sum(1 for method, path, _ in sim.bmc.received
               if method == "POST" and path.endswith("ComputerSystem.Reset"))


# The simulator's installer (edgeplane_dev/redfish_sim/install.py) reads the installer and
# the seed from the gateway's LAN server and phones home as the installed system would.
INSTALLED = {"os": "Ubuntu 24.04.1 LTS", "kernel": "6.8.0-51-generic",
             "k3s_version": "v1.31.4+k3s1", "node_name": "m1"}


def installing_bmc(redfish_bmcs, **options) -> tuple:
    sim = redfish_bmcs.fresh(BmcOptions(power_delay=0.2, install_seconds=0.2, **options))
    config = machine_config(sim.url)
    return create_driver(BmcProtocol.REDFISH, config.credentials, timeout=5), config, sim


def test_os_wait_installed_returns_the_facts_once_the_node_phones_home(site, origin,
                                                                       redfish_bmcs):
    driver, config, sim = installing_bmc(redfish_bmcs)
    try:
        _, installer, earlier = install_steps(site, origin, (driver, config, sim))
        before = resets(sim)
        outcome = run_task("os.wait_installed", TaskContext(
            driver, config, artifacts=site, earlier=earlier), {"timeout_s": 120})
    finally:
        driver.close()
    assert (outcome.changed, outcome.data) == (False, INSTALLED)
    assert outcome.message == ("installed: m1 (Ubuntu 24.04.1 LTS, kernel 6.8.0-51-generic, "
                               "v1.31.4+k3s1)")
    assert resets(sim) == before  # boot-once took: no second reset
    name = installer.rsplit("/", 1)[1]
    reads = site.reads.reads(installer.split("/")[2], name)
    assert reads is not None and reads.count >= 2  # the check at insert, then the boot


def test_a_bmc_that_ignores_boot_once_is_reset_into_the_cd_then_left_on_the_disk(
        site, origin, redfish_bmcs):
    driver, config, sim = installing_bmc(redfish_bmcs, boot_once_ignored=True)
    boot = interface(driver, Capability.BOOT)
    seen: list[tuple] = []
    clock = FakeClock(lambda _: seen.append(tuple(vars(boot.get_boot_override()).values())))
    try:
        _, _, earlier = install_steps(site, origin, (driver, config, sim))
        before = resets(sim)
        outcome = run_task("os.wait_installed", TaskContext(
            driver, config, sleep=clock.sleep, monotonic=clock.monotonic, artifacts=site,
            earlier=earlier), {"boot_read_s": 30})
        after = boot.get_boot_override()
    finally:
        driver.close()
    assert outcome.changed and outcome.data == INSTALLED
    assert "boot-once was ignored: reset again with the CD for every boot" in outcome.message
    assert "the installer is running; the disk boots from now on" in outcome.message
    assert resets(sim) == before + 1
    assert (after.target, after.mode) == (BootTarget.DISK, BootMode.CONTINUOUS)
    assert any(s[:2] == (BootTarget.CD, BootMode.CONTINUOUS) for s in seen)


def test_os_wait_installed_times_out_with_what_the_bmc_shows(site, bmc):
    driver, config, sim = bmc
    run_task("os.seed", TaskContext(driver, config, artifacts=site), {})
    sim.bmc.resources.edit("/redfish/v1/Systems/437XR1138R2").update(
        BootProgress={"LastState": "OSBootStarted"}, Oem={"Contoso": {"PostCode": "0x92"}})
    clock = FakeClock()
    with pytest.raises(BmcError) as failure:
        run_task("os.wait_installed", TaskContext(
            driver, dataclasses.replace(config, poll_interval=1.0), sleep=clock.sleep,
            monotonic=clock.monotonic, artifacts=site),
            {"timeout_s": 60})
    assert "no phone-home within 60 s (installing)" in str(failure.value)
    assert "the BMC shows power on, BootProgress OSBootStarted, POST code 0x92" in \
        str(failure.value)


def test_os_wait_installed_in_flight_at_a_restart_is_rechecked_not_run(site, bmc):
    driver, config, _ = bmc
    ctx = TaskContext(driver, config, artifacts=site)
    run_task("os.seed", ctx, {})
    pending = recheck_task("os.wait_installed", ctx, {})
    assert pending is not None and not pending.done
    assert pending.readout.startswith("no phone-home yet; the BMC shows power on")
    assert phone_home(site, config.id) == 204
    done = recheck_task("os.wait_installed", ctx, {})
    assert done is not None and done.done and done.data == FACTS


def test_fifty_machines_wait_for_their_install_at_once(site):
    """Each machine's wait holds only its own worker: all 50 are waiting before any of
    them phones home (were they run one after another, the first would wait forever)."""
    machines = {f"m{i:02d}": SimulatedMachine() for i in range(50)}
    configs = tuple(MachineConfig(id=name, protocol=BmcProtocol.REDFISH, poll_interval=0.2,
                                  min_interval=0.0,
                                  credentials=BmcCredentials(f"sim://{name}", "a", "b"))
                    for name in machines)
    config = SiteConfig(site="prov-site", journal=Path(os.devnull), mqtt=MqttSettings(),
                        machines=configs, max_parallel=64)
    executor = PlanExecutor(config, lambda m: SimulatedDriver(m.credentials, machines[m.id]),
                            artifacts=site)
    plan = Plan(site="prov-site", execution_id="r-k3s.prov-site", rollout_id="r-k3s", steps=[
        PlanStep("os.seed", {}, list(machines)),
        PlanStep("os.wait_installed", {"timeout_s": 600}, list(machines))])
    waiting: dict[str, bool] = {}
    lock = threading.Lock()

    def report(snapshot) -> None:
        with lock:
            waiting[snapshot.machine] = snapshot.steps[1].state == StepState.RUNNING

    results: list = []
    runner = threading.Thread(target=lambda: results.extend(executor.execute(plan, report)))
    runner.start()
    try:
        wait_until(lambda: sum(waiting.values()) == 50, timeout=120)
        for name in machines:
            assert machines[name].media["usb"].startswith(f"{site.base_url}/s/")
            assert phone_home(site, name, {**FACTS, "node_name": name}) == 204
    finally:
        runner.join(timeout=120)
    assert [r.state for r in results] == [MachineState.SUCCEEDED] * 50
    assert [r.steps[1].data["node_name"] for r in results] == sorted(machines)


def test_a_gateway_with_provision_settings_runs_the_install_steps_of_a_plan(
        tmp_path, broker, recorder):
    """The site's configuration as the gateway loads it: [cache] and [provision] give it
    the LAN routes; a signed plan seeds the machine, the test plays the installed system
    (it reads the seed the BMC was given and POSTs to the URL in it), the result carries
    the facts."""
    from edgeplane import protocol
    from edgeplane.protocol import Result
    from tests.support import GatewaySite, sign

    secrets_in(tmp_path)
    config = parse_config({
        "site": "prov-gw", "trust": {"plan_keys": ["6OW5K9Mok9014418VclQ7M0WplhdiG9uhfMSxF2rn0I="]},
        "cache": {"directory": "cache", "max_size": "1MiB", "listen": LOOPBACK, "port": 0},
        "provision": PROVISION}, tmp_path, "site.toml")
    site = GatewaySite(tmp_path, broker.port, "prov-gw", {"srv-1": SimulatedMachine()},
                       observe_interval=0, cache=config.cache, provision=config.provision)
    gateway = site.start()
    try:
        plan = Plan(site="prov-gw", execution_id="r-k3s.prov-gw", rollout_id="r-k3s", steps=[
            PlanStep("os.seed", {"hostname": "node-7"}, ["srv-1"]),
            PlanStep("os.wait_installed", {"timeout_s": 600}, ["srv-1"])])
        recorder.publish(protocol.plan_topic("prov-gw"), sign(plan))
        seed_url = wait_until(lambda: site.machine.media["usb"])
        assert gateway.artifacts is not None
        status, _, seed = lan(gateway.artifacts, "GET", urlsplit(seed_url).path)
        assert status == 200
        files = read_seed(seed)
        assert b'local-hostname: "node-7"' in files["meta-data"]
        answer = post(gateway.artifacts, urlsplit(phone_home_url(files)).path,
                      json.dumps({**FACTS, "node_name": "node-7"}).encode())
        assert answer[0] == 204
        result = recorder.wait_for(lambda ms: len(ms) == 1, Result)[0]
        assert result.state == "succeeded", result.message
        steps = result.machines[0].steps
        assert steps[1].data == {**FACTS, "node_name": "node-7"}
        reported = json.dumps([s.message for s in steps] + [s.data for s in steps])
        token = urlsplit(seed_url).path.split("/")[2]
        assert K3S_TOKEN not in reported and token not in reported
    finally:
        site.stop()
