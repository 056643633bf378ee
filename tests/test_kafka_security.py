"""Kafka TLS / SASL settings: from the config file and the environment into every client config
(aiokafka producer, consumer, admin; faust's broker_credentials), with clear errors for bad combinations."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from kubetide import kafka
from kubetide.config import ConfigError, load


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for key in list(__import__("os").environ):
        if key.startswith("KUBETIDE__KAFKA__") or key == "KUBETIDE_CONFIG":
            monkeypatch.delenv(key)
    kafka._default.clear()
    yield
    kafka._default.clear()


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> dict[str, Path]:
    """A self-signed CA and a client certificate signed by it (openssl), the key encrypted."""
    d = tmp_path_factory.mktemp("certs")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=kubetide-test-ca")
    run("req", "-newkey", "rsa:2048", "-passout", "pass:s3cret", "-keyout", "client.key", "-out", "client.csr",
        "-subj", "/CN=kubetide-client")
    run("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
        "client.pem", "-days", "2")
    return {"ca": d / "ca.pem", "cert": d / "client.pem", "key": d / "client.key"}


def write_config(tmp_path: Path, section: dict) -> Path:
    path = tmp_path / "kubetide.yaml"
    path.write_text(yaml.safe_dump({"kafka": {"bootstrap_servers": "kafka-1:9093", **section}}))
    return path


def test_plaintext_by_default_adds_nothing():
    assert kafka.default_security() == {}
    cfg = kafka.producer_config("k:9092", False)
    assert "security_protocol" not in cfg and "ssl_context" not in cfg
    assert kafka.kafka_settings({}).faust_settings() == {}


async def test_sasl_ssl_scram_from_file_with_env_override_reaches_every_client(tmp_path, certs, monkeypatch):
    path = write_config(tmp_path, {"security_protocol": "SASL_SSL", "ssl_cafile": str(certs["ca"]),
                                   "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "kubetide",
                                   "sasl_password": "from-file"})
    monkeypatch.setenv("KUBETIDE_CONFIG", str(path))
    monkeypatch.setenv("KUBETIDE__KAFKA__SASL_PASSWORD", "from-env")
    prod = kafka.producer_config("kafka-1:9093", False, client_id="p")
    cons = kafka.consumer_config("kafka-1:9093", False, group_id="g")
    for cfg in (prod, cons):
        assert cfg["security_protocol"] == "SASL_SSL"
        assert cfg["sasl_mechanism"] == "SCRAM-SHA-512"
        assert cfg["sasl_plain_username"] == "kubetide" and cfg["sasl_plain_password"] == "from-env"
        ctx = cfg["ssl_context"]
        assert isinstance(ctx, ssl.SSLContext) and ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
        assert ctx.cert_store_stats()["x509_ca"] == 1  # the CA from ssl_cafile, not the system store
    # aiokafka accepts the settings (its constructors validate SASL/TLS arguments)
    AIOKafkaProducer(**prod)
    AIOKafkaConsumer(**cons)
    # explicit security wins over the process default
    assert "security_protocol" not in kafka.producer_config("k:9092", True, security={})


def test_mutual_tls_with_encrypted_key(tmp_path, certs):
    settings = kafka.kafka_settings(load(write_config(tmp_path, {
        "security_protocol": "SSL", "ssl_cafile": str(certs["ca"]), "ssl_certfile": str(certs["cert"]),
        "ssl_keyfile": str(certs["key"]), "ssl_password": "s3cret", "ssl_check_hostname": False}), env={}))
    kw = settings.client_kwargs()
    assert kw["security_protocol"] == "SSL" and "sasl_mechanism" not in kw
    assert kw["ssl_context"].check_hostname is False
    creds = settings.faust_settings()["broker_credentials"]
    from faust.auth import SSLCredentials
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    assert isinstance(creds, SSLCredentials)
    assert credentials_to_aiokafka_auth(creds)["security_protocol"] == "SSL"
    # a wrong key password is a clear failure at start, not a silent plaintext fallback
    bad = kafka.KafkaSettings(security_protocol="SSL", ssl_certfile=str(certs["cert"]),
                              ssl_keyfile=str(certs["key"]), ssl_password="wrong")
    with pytest.raises(ssl.SSLError):
        bad.client_kwargs()


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_faust_gets_sasl_credentials(mechanism):
    from faust.auth import SASLCredentials
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    s = kafka.KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_mechanism=mechanism, sasl_username="u",
                            sasl_password="p")
    s.validate()
    creds = s.faust_settings()["broker_credentials"]
    assert isinstance(creds, SASLCredentials)
    auth = credentials_to_aiokafka_auth(creds)
    assert auth["security_protocol"] == "SASL_PLAINTEXT" and auth["sasl_mechanism"] == mechanism
    assert auth["sasl_plain_username"] == "u" and auth["sasl_plain_password"] == "p"
    assert s.client_kwargs()["sasl_mechanism"] == mechanism


@pytest.mark.parametrize(("section", "message"), [
    ({"ssl_cafile": "/etc/ca.pem"}, "kafka.ssl_cafile: TLS settings need security_protocol SSL or SASL_SSL"),
    ({"sasl_username": "u"}, "kafka.sasl_username: SASL settings need security_protocol SASL_PLAINTEXT"),
    ({"security_protocol": "SASL_SSL", "sasl_username": "u", "sasl_password": "p"},
     "kafka.sasl_mechanism: required with security_protocol SASL_SSL"),
    ({"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "sasl_username": "u"},
     "kafka.sasl_username: PLAIN needs sasl_username and sasl_password"),
    ({"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "GSSAPI", "sasl_username": "u"},
     "kafka.sasl_mechanism: 'GSSAPI' is not one of"),
    ({"security_protocol": "TLS"}, "kafka.security_protocol: 'TLS' is not one of"),
    ({"security_protocol": "SSL", "ssl_keyfile": "/k.pem"}, "kafka.ssl_keyfile: given without ssl_certfile"),
    ({"security_protocol": "SSL", "ssl_cafile": "/no/such/ca.pem"}, "kafka.ssl_cafile: file /no/such/ca.pem"),
    ({"sasl_pasword": "typo"}, "kafka.sasl_pasword: unknown setting"),
])
def test_bad_combinations_name_the_field(tmp_path, section, message):
    with pytest.raises(ConfigError) as err:
        kafka.kafka_settings(load(write_config(tmp_path, section), env={}))
    assert message in str(err.value)


def test_env_only_configuration_and_secrets_stay_out_of_repr(monkeypatch):
    monkeypatch.setenv("KUBETIDE__KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("KUBETIDE__KAFKA__SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("KUBETIDE__KAFKA__SASL_USERNAME", "svc")
    monkeypatch.setenv("KUBETIDE__KAFKA__SASL_PASSWORD", "hunter2")
    cfg = kafka.consumer_config("k:9092", False)
    assert cfg["sasl_mechanism"] == "SCRAM-SHA-256" and cfg["sasl_plain_password"] == "hunter2"
    assert "hunter2" not in repr(kafka.kafka_settings())
    monkeypatch.delenv("KUBETIDE__KAFKA__SASL_PASSWORD")
    with pytest.raises(ConfigError, match="sasl_username: SCRAM-SHA-256 needs"):
        kafka.producer_config("k:9092", False)  # the change is seen: reloaded, and refused
