"""The site config file: what a field engineer writes, and the errors they get when it's wrong."""

from __future__ import annotations

import pytest

from edge_gateway.config import load_config
from edge_gateway.errors import ConfigError
from edge_gateway.trust import PlanVerifier
from edgeplane_dev.stack import gateway_config
from tests.support import PLAN_KEYS

GOOD = """
site = "shop-0042"
max_parallel = 4

[mqtt]
host = "broker.example.net"
port = 8883
tls = true
ca_file = "ca.pem"
cert_file = "site.crt"
key_file = "site.key"

[trust]
plan_keys = ["6OW5K9Mok9014418VclQ7M0WplhdiG9uhfMSxF2rn0I="]

[[machines]]
id = "srv-1"
protocol = "redfish"
address = "https://10.0.0.11"
username = "admin"
password_file = "srv-1.password"

[[machines]]
id = "srv-2"
protocol = "ipmi"
address = "10.0.0.12:623"
username = "admin"
password_env = "SRV2_PASSWORD"
power_timeout = 600
"""


def write(tmp_path, text):
    for name in ("ca.pem", "site.crt", "site.key"):  # the site's identity (contents unread)
        (tmp_path / name).write_text("-----BEGIN-----\n")
        (tmp_path / name).chmod(0o600)
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_a_full_config_loads_with_secrets_by_reference(tmp_path, monkeypatch):
    (tmp_path / "srv-1.password").write_text("s3cret\n")
    monkeypatch.setenv("SRV2_PASSWORD", "other")
    config = load_config(write(tmp_path, GOOD))
    assert config.site == "shop-0042" and config.max_parallel == 4
    assert config.mqtt.tls and config.mqtt.port == 8883
    assert config.mqtt.cert_file == str(tmp_path / "site.crt"), "next to the config"
    assert config.journal == tmp_path / "shop-0042.journal.db"
    srv1, srv2 = config.machines
    assert srv1.credentials.password == "s3cret"
    assert srv1.credentials.keep_alive, "a call's requests share a connection by default"
    assert srv2.credentials.password == "other" and srv2.power_timeout == 600
    assert "s3cret" not in repr(srv1), "passwords never show in logs or reprs"


@pytest.mark.parametrize("change, error", [
    (('site = "shop-0042"', 'site = "Shop 42"'), "not a valid site id"),
    (('protocol = "redfish"', 'protocol = "snmp"'), "protocol 'snmp' is not one of"),
    (('id = "srv-2"', 'id = "srv-1"'), "used twice: srv-1"),
    (('password_env = "SRV2_PASSWORD"', ""), "machine 'srv-2': give password"),
    (('address = "10.0.0.12:623"', ""), "machine 'srv-2': address is required"),
    (("port = 8883", "port = 8883\nqos = 2"), r"\[mqtt\].*qos"),
    (("[mqtt]", "[mqtt"), "cannot be read"),
    (("power_timeout = 600", "keep_alive = 0"),
     "machine 'srv-2': keep_alive must be true or false, not 0"),
])
def test_mistakes_are_reported_naming_the_field(tmp_path, monkeypatch, change, error):
    (tmp_path / "srv-1.password").write_text("s3cret")
    monkeypatch.setenv("SRV2_PASSWORD", "other")
    with pytest.raises(ConfigError, match=error):
        load_config(write(tmp_path, GOOD.replace(*change)))


def test_missing_file_and_missing_secret_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="password_file .* cannot be read"):
        load_config(write(tmp_path, GOOD))


def test_the_local_stack_writes_configs_the_gateway_accepts(tmp_path):
    text = gateway_config("site-001", 1883, [
        {"id": "rf-1", "protocol": "redfish", "address": "http://127.0.0.1:9000",
         "system_id": "/redfish/v1/Systems/abc"},
        {"id": "ipmi-1", "protocol": "ipmi", "address": "127.0.0.1:9623"}],
        plan_keys=PLAN_KEYS)
    config = load_config(write(tmp_path, text))
    assert config.plan_keys == PLAN_KEYS
    assert [m.id for m in config.machines] == ["rf-1", "ipmi-1"]
    assert config.machines[0].credentials.system_id == "/redfish/v1/Systems/abc"


def test_bmc_certificates_are_checked_unless_a_machine_opts_out(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("SRV2_PASSWORD", "pw2")
    (tmp_path / "srv-1.password").write_text("pw1\n")
    (tmp_path / "bmc-ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    config = load_config(write(tmp_path, GOOD))
    assert [m.credentials.verify_tls for m in config.machines] == [True, True]
    pinned = GOOD.replace('password_file = "srv-1.password"',
                          'password_file = "srv-1.password"\ntls_ca_bundle = "bmc-ca.pem"')
    (first, _) = load_config(write(tmp_path, pinned)).machines
    assert first.credentials.verify_tls == str(tmp_path / "bmc-ca.pem")
    opted_out = GOOD.replace('password_file = "srv-1.password"',
                             'password_file = "srv-1.password"\nverify_tls = false')
    with caplog.at_level("WARNING"):
        (first, _) = load_config(write(tmp_path, opted_out)).machines
    assert first.credentials.verify_tls is False
    assert "TLS certificate is not checked" in caplog.text
    for bad, said in (('verify_tls = "no"', "verify_tls must be true or false"),
                      ('tls_ca_bundle = "missing.pem"', "is not a file")):
        with pytest.raises(ConfigError, match=said):
            load_config(write(tmp_path, GOOD.replace(
                'password_file = "srv-1.password"', f'password_file = "srv-1.password"\n{bad}')))


def test_a_config_or_password_file_others_can_read_is_warned_about(tmp_path, monkeypatch,
                                                                    caplog):
    monkeypatch.setenv("SRV2_PASSWORD", "pw2")
    secret = tmp_path / "srv-1.password"
    secret.write_text("pw1\n")
    path = write(tmp_path, GOOD)
    path.chmod(0o600)
    secret.chmod(0o600)
    with caplog.at_level("WARNING"):
        load_config(path)
    assert "readable by others" not in caplog.text
    path.chmod(0o644)
    secret.chmod(0o640)
    with caplog.at_level("WARNING"):
        load_config(path)
    assert f"config file {path} is readable by others (mode 644)" in caplog.text
    assert f"password_file {secret} is readable by others (mode 640)" in caplog.text


def test_secret_files_are_written_private_and_whole(tmp_path):
    import stat

    from edgeplane_cli.private_files import write_private

    target = write_private(tmp_path / "state" / "stack.json", '{"token": "t1"}')
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    target.chmod(0o644)  # replaced whole: the new file is private again
    write_private(target, '{"token": "t2"}')
    assert (stat.S_IMODE(target.stat().st_mode), target.read_text()) == (0o600, '{"token": "t2"}')
    assert [p.name for p in target.parent.iterdir()] == ["stack.json"]  # no temporary left


@pytest.mark.parametrize("change, error", [
    (('key_file = "site.key"\n', ""), "tls = true needs key_file"),
    (('ca_file = "ca.pem"', 'ca_file = "missing.pem"'), "ca_file .*missing.pem is not a file"),
    (("tls = true", 'tls = "yes"'), "tls must be true or false"),
    (('cert_file = "site.crt"', "cert_file = 7"), "cert_file must be a path"),
])
def test_the_broker_identity_is_checked(tmp_path, change, error):
    (tmp_path / "srv-1.password").write_text("s3cret\n")
    with pytest.raises(ConfigError, match=error):
        load_config(write(tmp_path, GOOD.replace(*change)))


def test_a_certificate_turns_tls_on_and_clear_text_is_warned_of(tmp_path, monkeypatch,
                                                                 caplog):
    (tmp_path / "srv-1.password").write_text("s3cret\n")
    monkeypatch.setenv("SRV2_PASSWORD", "other")
    assert load_config(write(tmp_path, GOOD.replace("tls = true\n", ""))).mqtt.tls
    plain = GOOD.replace("tls = true\n", "").replace('ca_file = "ca.pem"\n', "")
    plain = plain.replace('cert_file = "site.crt"\n', "").replace('key_file = "site.key"\n', "")
    assert not load_config(write(tmp_path, plain)).mqtt.tls
    assert "the MQTT link is not encrypted" in caplog.text


def test_a_site_key_readable_by_others_is_warned_of(tmp_path, monkeypatch, caplog):
    (tmp_path / "srv-1.password").write_text("s3cret\n")
    monkeypatch.setenv("SRV2_PASSWORD", "other")
    path = write(tmp_path, GOOD)
    (tmp_path / "site.key").chmod(0o644)
    load_config(path)
    assert "the site's MQTT key" in caplog.text and "chmod 600" in caplog.text


ROTATED = "OYbEAtpOkuIeXtnWwpaDSa3gyQpAzglFBZZOqVH11NE="  # a second key, while keys rotate


def test_the_cloud_s_keys_are_pinned_one_or_more(tmp_path, monkeypatch):
    (tmp_path / "srv-1.password").write_text("s3cret\n")
    monkeypatch.setenv("SRV2_PASSWORD", "other")
    config = load_config(write(tmp_path, GOOD))
    assert config.plan_keys == ("6OW5K9Mok9014418VclQ7M0WplhdiG9uhfMSxF2rn0I=",)
    two = GOOD.replace('plan_keys = ["', f'plan_keys = ["{ROTATED}", "')
    config = load_config(write(tmp_path, two))
    assert config.plan_keys[0] == ROTATED and len(config.plan_keys) == 2
    assert PlanVerifier(config.plan_keys).key_ids == ["ed25519:2709eabbe0474e62",
                                                      "ed25519:ea03887ea2cce8cf"]


@pytest.mark.parametrize("change, error", [
    (('[trust]\nplan_keys = ["6OW5K9Mok9014418VclQ7M0WplhdiG9uhfMSxF2rn0I="]\n', ""),
     r"no plan key is pinned.*add the cloud's public key, \[trust\] plan_keys"),
    (('plan_keys = ["6OW5K9Mok9014418VclQ7M0WplhdiG9uhfMSxF2rn0I="]', "plan_keys = []"),
     "no plan key is pinned"),
    (('plan_keys = ["6OW5K9Mok9014418VclQ7M0WplhdiG9uhfMSxF2rn0I="]',
      'plan_keys = "6OW5K9Mok9014418VclQ7M0WplhdiG9uhfMSxF2rn0I="'),
     r"\[trust\] plan_keys must be a list"),
    (("6OW5K9Mok9014418VclQ7M0WplhdiG9uhfMSxF2rn0I=", "not base64!"),
     r"\[trust\] plan_keys\[0\] is not base64"),
    (("6OW5K9Mok9014418VclQ7M0WplhdiG9uhfMSxF2rn0I=", "AAAA"),
     r"plan_keys\[0\] is 3 bytes; an Ed25519 public key is 32"),
    (('plan_keys = ["6OW5K9Mok9014418VclQ7M0WplhdiG9uhfMSxF2rn0I="]', "plan_keys = [7]"),
     r"plan_keys\[0\] must be a string"),
    (("[trust]\n", "[trust]\nkeys = []\n"), r"\[trust\] has unknown setting\(s\) keys"),
])
def test_a_config_without_a_good_plan_key_is_refused_naming_the_fix(tmp_path, monkeypatch,
                                                                    change, error):
    (tmp_path / "srv-1.password").write_text("s3cret\n")
    monkeypatch.setenv("SRV2_PASSWORD", "other")
    with pytest.raises(ConfigError, match=error):
        load_config(write(tmp_path, GOOD.replace(*change)))
