"""The site artifact cache: downloads (once, resumed, checked), eviction, the LAN server,
and the steps that hand their BMC an image from it. Real HTTP servers on loopback: the
local stack's artifact server as the origin (it counts requests and can cut a response
short), the cache's own LAN server, the Redfish simulator as the BMC that fetches."""

from __future__ import annotations

import hashlib
import http.client
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from edge_gateway.cache.artifact import Artifact, CacheError
from edge_gateway.cache.fetch import FetchInterrupted
from edge_gateway.cache.settings import CacheSettings, parse_cache
from edge_gateway.cache.site import SiteCache
from edge_gateway.cache.store import ArtifactStore
from edge_gateway.config import MachineConfig, MqttSettings, SiteConfig
from edge_gateway.drivers import create_driver
from edge_gateway.drivers.base import BmcCredentials, Driver
from edge_gateway.errors import ConfigError, GatewayError
from edge_gateway.executor import PlanExecutor, is_retryable
from edge_gateway.tasks import TaskContext, run_task
from edgeplane.protocol import BmcProtocol, MachineState, Plan, PlanStep
from edgeplane_dev.artifacts import ArtifactServer
from edgeplane_dev.ports import LOOPBACK
from edgeplane_dev.redfish_sim import BmcOptions
from tests.support import GatewaySite, wait_until

SIZE = 300_000  # a few chunks of every reader and writer on the way
FAST = BmcOptions(power_delay=0.2, update_seconds=0.5, reset_seconds=0.5)


def content(seed: str, size: int = SIZE) -> bytes:
    block = hashlib.sha256(seed.encode()).digest() * 64
    return (block * (size // len(block) + 1))[:size]


@pytest.fixture
def origin(tmp_path) -> Iterator[ArtifactServer]:
    server = ArtifactServer(tmp_path / "origin").start()
    yield server
    server.stop()


def put(origin: ArtifactServer, name: str, data: bytes) -> Artifact:
    (origin.directory / name).write_bytes(data)
    return Artifact(hashlib.sha256(data).hexdigest(), origin.url(name), len(data))


def body_gets(origin: ArtifactServer, name: str) -> list[str | None]:
    """The Range header of each GET the origin got for ``name`` (None: the whole file)."""
    return [r.range for r in origin.requests if r.method == "GET" and r.path == f"/{name}"]


def store_in(directory: Path, max_bytes: int = 10 * SIZE, **kwargs) -> ArtifactStore:
    return ArtifactStore(directory, max_bytes, sleep=lambda _: None, **kwargs)


@pytest.fixture
def cache(tmp_path) -> Iterator[SiteCache]:
    settings = CacheSettings(directory=tmp_path / "cache", max_bytes=10 * SIZE,
                             listen=LOOPBACK, port=0, advertise=LOOPBACK, max_clients=4)
    site_cache = SiteCache(settings, store_in(settings.directory))
    site_cache.start()
    yield site_cache
    site_cache.stop()


def lan(cache: SiteCache, method: str, path: str,
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection(LOOPBACK, cache.port, timeout=10)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


# --- downloads ---------------------------------------------------------------------------


def test_an_artifact_is_downloaded_once_and_then_found(tmp_path, origin):
    artifact = put(origin, "installer.iso", content("iso"))
    store = store_in(tmp_path / "cache")
    first = store.ensure(artifact)
    second = store.ensure(artifact)
    assert first == second == tmp_path / "cache" / artifact.sha256
    assert first.read_bytes() == content("iso")
    assert body_gets(origin, "installer.iso") == [None]
    stats = store.stats()
    assert (stats.artifacts, stats.bytes, stats.downloads, stats.hits, stats.wire_bytes) == \
        (1, SIZE, 1, 1, SIZE)


def test_the_origin_serves_a_wheel_whose_version_has_a_local_part(tmp_path, origin):
    name = "edge_gateway-0.1.0+site.7-py3-none-any.whl"
    artifact = put(origin, name, content("wheel"))
    assert store_in(tmp_path / "cache").ensure(artifact).read_bytes() == content("wheel")
    assert body_gets(origin, name) == [None]


def test_a_download_cut_mid_body_resumes_from_where_it_stopped(tmp_path, origin):
    artifact = put(origin, "installer.iso", content("iso"))
    origin.cut_after(100_000)
    store = store_in(tmp_path / "cache")
    assert store.ensure(artifact).read_bytes() == content("iso")
    assert body_gets(origin, "installer.iso") == [None, "bytes=100000-"]
    assert store.stats().wire_bytes == SIZE  # nothing came twice


def test_a_download_resumes_after_a_gateway_restart(tmp_path, origin):
    artifact = put(origin, "installer.iso", content("iso"))
    origin.cut_after(120_000)
    with pytest.raises(FetchInterrupted, match="120000 bytes kept to resume"):
        store_in(tmp_path / "cache", attempts=1).ensure(artifact)
    assert not (tmp_path / "cache" / artifact.sha256).exists()  # not servable half done
    restarted = store_in(tmp_path / "cache")
    assert restarted.ensure(artifact).read_bytes() == content("iso")
    assert body_gets(origin, "installer.iso") == [None, "bytes=120000-"]
    assert restarted.stats().wire_bytes == SIZE - 120_000


def test_steps_waiting_on_a_download_that_fails_fail_with_it(tmp_path, origin):
    artifact = put(origin, "installer.iso", content("iso"))
    origin.cut_after(1000, 2000)  # both tries of the one download are cut
    second_waits = threading.Event()

    def between_tries(_: float) -> None:
        second_waits.wait(10)
        time.sleep(0.2)  # lets the second step reach the download it waits for

    store = ArtifactStore(tmp_path / "cache", 10 * SIZE, attempts=2, sleep=between_tries)
    errors: list[Exception] = []

    def step() -> None:
        try:
            store.ensure(artifact)
        except CacheError as exc:
            errors.append(exc)

    first = threading.Thread(target=step)
    first.start()
    wait_until(lambda: origin.requests)
    second = threading.Thread(target=step)
    second.start()
    second_waits.set()
    first.join(10)
    second.join(10)
    assert len(errors) == 2 and "while this step waited" in str(errors[1])
    assert all(isinstance(error, FetchInterrupted) and is_retryable(error)
               for error in errors)  # a rollout's retry resumes the download
    assert body_gets(origin, "installer.iso") == [None, "bytes=1000-"]  # one download


def test_an_origin_that_ignores_ranges_sends_the_whole_file_again(tmp_path, images):
    data = b"EDGEPLANE" * 256  # what the images server answers, always whole (HTTP 200)
    artifact = Artifact(hashlib.sha256(data).hexdigest(), images("boot.iso"), len(data))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / f"{artifact.sha256}.partial").write_bytes(data[:100])
    store = store_in(tmp_path / "cache")
    assert store.ensure(artifact).read_bytes() == data
    assert store.stats().wire_bytes == len(data)


def test_a_kept_part_that_is_wrong_is_fetched_again_whole(tmp_path, origin):
    artifact = put(origin, "installer.iso", content("iso"))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / f"{artifact.sha256}.partial").write_bytes(b"x" * 1000)
    store = store_in(tmp_path / "cache")
    assert store.ensure(artifact).read_bytes() == content("iso")
    assert body_gets(origin, "installer.iso") == ["bytes=1000-", None]


def test_a_wrong_digest_is_refused_and_nothing_is_left(tmp_path, origin, cache):
    artifact = put(origin, "firmware-2.0.bin", content("fw"))
    wrong = Artifact("0" * 64, artifact.url, artifact.size)
    with pytest.raises(CacheError, match=f"has SHA-256 {artifact.sha256}, not {'0' * 64}"):
        cache.ensure(wrong)
    assert sorted(p.name for p in cache.settings.directory.iterdir()) == ["index.json"]
    assert lan(cache, "HEAD", f"/a/{'0' * 64}")[0] == 404
    assert cache.stats().artifacts == 0


def test_a_size_other_than_the_plans_is_refused(tmp_path, origin):
    artifact = put(origin, "firmware-2.0.bin", content("fw"))
    store = store_in(tmp_path / "cache")
    with pytest.raises(CacheError, match=f"is {SIZE} bytes; the plan says {SIZE - 1}"):
        store.ensure(Artifact(artifact.sha256, artifact.url, SIZE - 1))
    assert list((tmp_path / "cache").glob("*.partial")) == []


def test_an_origin_error_names_the_url_and_status(tmp_path, origin):
    store = store_in(tmp_path / "cache")
    with pytest.raises(CacheError, match="absent.iso.*HTTP 404"):
        store.ensure(Artifact("a" * 64, origin.url("absent.iso"), 10))


@pytest.mark.parametrize("digest, url, size, says", [
    ("A" * 64, "http://h/x", 1, "not 64 lowercase hex"),
    ("a" * 63, "http://h/x", 1, "not 64 lowercase hex"),
    ("a" * 64, "file:///etc/passwd", 1, "not an http:// or https:// URL"),
    ("a" * 64, "ftp://h/x", 1, "not an http:// or https:// URL"),
    ("a" * 64, "http://h/x y", 1, "spaces or control characters"),
    ("a" * 64, "http://h/x", 0, "not a positive number of bytes"),
])
def test_an_artifact_reference_is_checked(digest, url, size, says):
    with pytest.raises(CacheError, match=says):
        Artifact(digest, url, size)


# --- eviction ----------------------------------------------------------------------------


def test_the_least_recently_used_goes_first_but_never_a_pinned_one(tmp_path, origin):
    now = [1000.0]

    def clock() -> float:
        now[0] += 1
        return now[0]

    store = store_in(tmp_path / "cache", max_bytes=3 * SIZE, clock=clock)
    a, b, c, d = (put(origin, f"{name}.iso", content(name)) for name in "abcd")
    for artifact in (a, b, c):
        store.ensure(artifact)
    store.pin("plan:rollout-1.site", [a.sha256])
    store.ensure(b)  # b used again: c is now the least recently used but a
    store.ensure(d)
    held = {p.name for p in (tmp_path / "cache").iterdir() if len(p.name) == 64}
    assert held == {a.sha256, b.sha256, d.sha256}
    assert store.stats().evictions == 1
    store.pin("plan:rollout-2.site", [b.sha256, d.sha256])
    with pytest.raises(CacheError, match="no room for artifact .* 3 artifact\\(s\\) in use"):
        store.ensure(c)
    store.release("plan:rollout-1.site")
    store.ensure(c)  # a is free to go now
    assert not (tmp_path / "cache" / a.sha256).exists()


def test_an_artifact_larger_than_the_cache_is_refused_before_any_download(tmp_path, origin):
    artifact = put(origin, "huge.iso", content("huge"))
    with pytest.raises(CacheError, match="holds at most 1000"):
        store_in(tmp_path / "cache", max_bytes=1000).ensure(artifact)
    assert origin.requests == []


# --- the LAN server ----------------------------------------------------------------------


@pytest.fixture
def served(origin, cache) -> tuple[Artifact, bytes]:
    data = content("lan")
    artifact = put(origin, "installer.iso", data)
    cache.ensure(artifact)
    return artifact, data


def test_the_lan_server_answers_head_and_get_with_the_whole_file(cache, served):
    artifact, data = served
    path = f"/a/{artifact.sha256}"
    status, headers, body = lan(cache, "HEAD", path)
    assert (status, headers["Content-Length"], headers["Accept-Ranges"], body) == \
        (200, str(SIZE), "bytes", b"")
    status, headers, body = lan(cache, "GET", f"{path}/installer.iso")
    assert (status, body) == (200, data)
    assert cache.local_url(artifact) == \
        f"http://{LOOPBACK}:{cache.port}/a/{artifact.sha256}/installer.iso"


@pytest.mark.parametrize("asked, first, last", [
    ("bytes=0-99", 0, 99),
    ("bytes=1000-", 1000, SIZE - 1),
    ("bytes=-500", SIZE - 500, SIZE - 1),
    (f"bytes={SIZE - 10}-{SIZE + 1000}", SIZE - 10, SIZE - 1),
])
def test_the_lan_server_serves_one_byte_range(cache, served, asked, first, last):
    artifact, data = served
    status, headers, body = lan(cache, "GET", f"/a/{artifact.sha256}", {"Range": asked})
    assert status == 206
    assert headers["Content-Range"] == f"bytes {first}-{last}/{SIZE}"
    assert body == data[first:last + 1]


def test_the_lan_server_refuses_a_range_past_the_end(cache, served):
    artifact, _ = served
    status, headers, _ = lan(cache, "GET", f"/a/{artifact.sha256}",
                             {"Range": f"bytes={SIZE}-"})
    assert (status, headers["Content-Range"]) == (416, f"bytes */{SIZE}")


@pytest.mark.parametrize("path", [
    "/a/" + "f" * 64,  # not in the cache
    "/a/{digest}?x=1",  # no query strings
    "/a/{digest}/../index.json",
    "/index.json",
    "/a/{DIGEST}",
    "/a/{digest}.partial",
])
def test_the_lan_server_answers_404_for_anything_else(cache, served, path):
    artifact, _ = served
    status, _, _ = lan(cache, "GET", path.format(digest=artifact.sha256,
                                                 DIGEST=artifact.sha256.upper()))
    assert status == 404


def test_a_partial_download_is_not_served(tmp_path, origin, cache):
    artifact = put(origin, "half.iso", content("half"))
    origin.cut_after(1000)
    cache.store.attempts = 1
    with pytest.raises(FetchInterrupted):
        cache.ensure(artifact)
    assert lan(cache, "HEAD", f"/a/{artifact.sha256}")[0] == 404


def test_curl_resumes_from_the_lan_server(tmp_path, cache, served):
    """An independent client: curl continuing a file from where its copy ends."""
    artifact, data = served
    copy = tmp_path / "copy.iso"
    copy.write_bytes(data[:12345])
    subprocess.run(["curl", "-sSf", "-C", "-", "-o", str(copy), cache.local_url(artifact)],
                   check=True, timeout=30)
    assert copy.read_bytes() == data
    assert cache.stats().served_bytes == SIZE - 12345


def test_the_lan_server_serves_a_bounded_number_of_clients(tmp_path, origin):
    settings = CacheSettings(directory=tmp_path / "cache", max_bytes=10 * SIZE,
                             listen=LOOPBACK, port=0, advertise=LOOPBACK, max_clients=1)
    site_cache = SiteCache(settings, store_in(settings.directory))
    site_cache.start()
    artifact = put(origin, "installer.iso", content("iso"))
    site_cache.ensure(artifact)
    holder = http.client.HTTPConnection(LOOPBACK, site_cache.port, timeout=10)
    try:
        holder.request("HEAD", f"/a/{artifact.sha256}")  # kept alive: it holds the slot
        assert holder.getresponse().status == 200
        status, headers, _ = lan(site_cache, "GET", f"/a/{artifact.sha256}")
        assert (status, headers["Retry-After"]) == (503, "5")
        holder.close()
        wait_until(lambda: lan(site_cache, "HEAD", f"/a/{artifact.sha256}")[0] == 200)
    finally:
        holder.close()
        site_cache.stop()


def test_the_lan_server_speaks_https_with_a_certificate(tmp_path, origin):
    from edgeplane_dev.pki import LocalCa

    ca = LocalCa(tmp_path / "pki").ensure()
    server = ca.broker()  # a certificate for 127.0.0.1
    settings = parse_cache({"directory": "cache", "max_size": "1MiB", "listen": LOOPBACK,
                            "port": 0, "tls_cert": str(server.cert_file),
                            "tls_key": str(server.key_file)}, tmp_path, "site.toml")
    assert settings is not None
    site_cache = SiteCache(settings, store_in(settings.directory))
    site_cache.start()
    try:
        artifact = put(origin, "installer.iso", content("iso"))
        site_cache.ensure(artifact)
        url = site_cache.local_url(artifact)
        assert url.startswith(f"https://{LOOPBACK}:")
        got = subprocess.run(["curl", "-sSf", "--cacert", str(ca.ca_file), "-r", "10-19", url],
                             check=True, capture_output=True, timeout=30).stdout
        assert got == content("iso")[10:20]
        refused = subprocess.run(["curl", "-sS", url], capture_output=True, timeout=30)
        assert refused.returncode != 0  # a client that cannot verify it gets nothing
    finally:
        site_cache.stop()


# --- steps through the cache -------------------------------------------------------------


def machine_config(url: str) -> MachineConfig:
    return MachineConfig(id="m1", protocol=BmcProtocol.REDFISH, timeout=5, power_timeout=10,
                         poll_interval=0.1, min_interval=0.0,
                         credentials=BmcCredentials(url, "admin", "password"))


@pytest.fixture
def bmc(redfish_bmcs) -> Iterator[tuple[Driver, MachineConfig, object]]:
    sim = redfish_bmcs.fresh(FAST)
    config = machine_config(sim.url)
    driver = create_driver(BmcProtocol.REDFISH, config.credentials, timeout=5)
    yield driver, config, sim
    driver.close()


def test_firmware_update_hands_the_bmc_the_lan_url(origin, cache, bmc):
    driver, config, sim = bmc
    artifact = put(origin, "bmc-1.46.0.bin", content("fw"))
    outcome = run_task("firmware.update", TaskContext(driver, config, artifacts=cache), {
        "image": artifact.url, "sha256": artifact.sha256, "size": artifact.size,
        "component": "BMC", "version": "1.46.0"})
    assert outcome.message == "Contoso BMC Firmware updated to 1.46.0"
    updates = [body["ImageURI"] for _, path, body in sim.bmc.received
               if path.endswith("UpdateService.SimpleUpdate")]
    assert updates == [f"http://{LOOPBACK}:{cache.port}/a/{artifact.sha256}/bmc-1.46.0.bin"]
    assert body_gets(origin, "bmc-1.46.0.bin") == [None]
    assert cache.stats().served_requests >= 1  # the BMC fetched it from the gateway


def test_a_step_naming_a_digest_without_a_cache_fails_saying_so(origin, bmc):
    driver, config, _ = bmc
    artifact = put(origin, "boot.iso", content("iso"))
    with pytest.raises(GatewayError, match="has no artifact cache"):
        run_task("media.insert", TaskContext(driver, config), {
            "image": artifact.url, "sha256": artifact.sha256, "size": artifact.size})
    assert origin.requests == []


def test_two_plans_inserting_one_image_download_it_once(origin, cache, redfish_bmcs):
    sims = redfish_bmcs.fresh(FAST, count=2)
    machines = tuple(MachineConfig(**{**machine_config(url).__dict__, "id": f"m{i}"})
                     for i, url in enumerate(sims.urls))
    site = SiteConfig(site="cache-site", journal=Path(os.devnull), mqtt=MqttSettings(),
                      machines=machines)
    executor = PlanExecutor(site, lambda m: create_driver(m.protocol, m.credentials,
                                                          timeout=5), artifacts=cache)
    artifact = put(origin, "installer.iso", content("iso"))
    params = {"image": artifact.url, "sha256": artifact.sha256, "size": artifact.size}
    for number in (1, 2):
        plan = Plan(site="cache-site", execution_id=f"r{number}.cache-site",
                    rollout_id=f"r{number}",
                    steps=[PlanStep("media.insert", params, ["m0", "m1"])])
        results = executor.execute(plan, lambda _: None)
        assert [r.state for r in results] == [MachineState.SUCCEEDED] * 2, results
        lan_urls = [cache.machine_url(artifact, m) for m in ("m0", "m1")]
        assert [r.steps[0].data["image"] for r in results] == lan_urls
        assert lan_urls[0] != lan_urls[1]  # each machine's reads can be told apart
    for sim, result, lan_url in zip(sims.bmcs, results, lan_urls, strict=True):
        assert sim.resources.get(result.steps[0].data["slot"])["Image"] == lan_url
    assert body_gets(origin, "installer.iso") == [None]
    assert cache.stats().hits == 3  # one download, then three steps found it


# --- the gateway runs it --------------------------------------------------------------


def test_a_gateway_runs_a_plan_through_its_cache_and_reports_it(tmp_path, broker, recorder,
                                                                 origin):
    from edgeplane import protocol
    from edgeplane.protocol import CacheStatus, Result
    from edgeplane_dev.simulated_driver import SimulatedMachine
    from tests.support import sign

    settings = parse_cache({"directory": "cache", "max_size": "1MiB", "listen": LOOPBACK,
                            "port": 0}, tmp_path, "site.toml")
    machine = SimulatedMachine()
    site = GatewaySite(tmp_path, broker.port, "cache-gw", {"srv-1": machine},
                       observe_interval=0, cache=settings)
    gateway = site.start()
    artifact = put(origin, "installer.iso", content("iso"))
    try:
        assert gateway.artifacts is not None
        lan_url = gateway.artifacts.machine_url(artifact, "srv-1")
        plan = Plan(site="cache-gw", execution_id="r-iso.cache-gw", rollout_id="r-iso",
                    steps=[PlanStep("media.insert", {"image": artifact.url,
                                                     "sha256": artifact.sha256,
                                                     "size": artifact.size}, ["srv-1"])])
        recorder.publish(protocol.plan_topic("cache-gw"), sign(plan))
        result = recorder.wait_for(lambda ms: len(ms) == 1, Result)[0]
        assert result.state == "succeeded", result.message
        assert machine.media["cd"] == lan_url
        reports = recorder.wait_for(lambda ms: len(ms) == 2, CacheStatus)
        assert [(r.artifacts, r.downloads, r.bytes) for r in reports] == \
            [(0, 0, 0), (1, 1, SIZE)]  # at connect, then after the plan
        status, _, body = lan(gateway.artifacts, "GET", urlsplit(lan_url).path)
        assert (status, body) == (200, content("iso"))
        port = gateway.artifacts.port
    finally:
        site.stop()
    with pytest.raises(OSError):  # the LAN server stopped with the gateway
        http.client.HTTPConnection(LOOPBACK, port, timeout=2).connect()


@pytest.mark.parametrize("table, says", [
    ({"directory": "c", "max_size": "1GiB"}, "listen is required"),
    ({"directory": "c", "max_size": "lots", "listen": "10.0.0.2"}, "max_size must be"),
    ({"directory": "c", "max_size": 0, "listen": "10.0.0.2"}, "max_size must be"),
    ({"directory": "c", "max_size": "1GiB", "listen": "0.0.0.0"}, "set advertise"),
    ({"directory": "c", "max_size": "1GiB", "listen": "10.0.0.2", "port": 70000},
     "port must be"),
    ({"directory": "c", "max_size": "1GiB", "listen": "10.0.0.2", "tls_cert": "x.crt"},
     "tls_cert .* is not a file"),
    ({"directory": "c", "max_size": "1GiB", "listen": "10.0.0.2", "size": 1},
     "unknown setting"),
])
def test_a_wrong_cache_table_is_refused_naming_the_setting(tmp_path, table, says):
    with pytest.raises(ConfigError, match=says):
        parse_cache(table, tmp_path, "site.toml")


def test_the_cache_table_reads_sizes_and_paths(tmp_path):
    settings = parse_cache({"directory": "cache", "max_size": "200GiB", "listen": "0.0.0.0",
                            "advertise": "10.0.0.2"}, tmp_path, "site.toml")
    assert settings is not None
    assert (settings.directory, settings.max_bytes, settings.port, settings.advertise) == \
        (tmp_path / "cache", 200 * 1024**3, 8080, "10.0.0.2")


# --- the cloud keeps and shows it ------------------------------------------------------


def test_the_cloud_keeps_the_latest_cache_report_and_sites_show_prints_it(api):
    from chalicelib import ingest
    from edgeplane.protocol import CacheStatus, Presence
    from edgeplane_cli.render import cache_line
    from tests.support import call, up

    ingest.handle_message(*up(Presence(site="shop-7", online=True, session=100.0)))
    status, body = call(api, "GET", "/sites/shop-7")
    assert cache_line(body["site"]) == "artifact cache: none reported"
    report = CacheStatus(site="shop-7", ts=200.0, artifacts=2, bytes=3 * 1024**3,
                         max_bytes=200 * 1024**3, hits=49, downloads=2,
                         wire_bytes=3 * 1024**3, served_requests=6120,
                         served_bytes=150 * 1024**3, evictions=1)
    ingest.handle_message(*up(report))
    ingest.handle_message(*up(CacheStatus(site="shop-7", ts=150.0, artifacts=1)))  # older
    ingest.handle_message(*up(CacheStatus(site="nowhere", ts=150.0, artifacts=1)))
    status, body = call(api, "GET", "/sites/shop-7")
    assert status == 200
    assert {k: v for k, v in body["site"]["cache"].items() if k != "reported_at"} == {
        "artifacts": 2, "bytes": 3 * 1024**3, "max_bytes": 200 * 1024**3, "hits": 49,
        "downloads": 2, "wire_bytes": 3 * 1024**3, "served_requests": 6120,
        "served_bytes": 150 * 1024**3, "evictions": 1}
    assert cache_line(body["site"]).startswith(
        "artifact cache: 2 artifacts, 3.0 GiB of 200.0 GiB, 49 hits, 2 downloads (3.0 GiB "
        "over the WAN), 150.0 GiB served on the LAN, 1 evicted")
    assert call(api, "GET", "/sites/nowhere")[0] == 404
