"""The gateway's TLS settings: bad or missing files stop it at start, naming the option (or the
setting) and the file, before anything is declared or served.  Serving HTTPS for real:
tests/integration/test_https.py."""
from __future__ import annotations

import ssl

import pytest
import trustme

from bus.errors import ConfigError
from bus.tls import server_context
from tests.support import ROUTE_ENV, run_cli


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gateway-tls")
    ca, other = trustme.CA(), trustme.CA()
    leaf, stranger = ca.issue_cert("127.0.0.1"), other.issue_cert("127.0.0.1")
    paths = {"cert": tmp / "gateway.pem", "key": tmp / "gateway.key", "ca": tmp / "clients-ca.pem",
             "other-key": tmp / "other.key", "garbage": tmp / "garbage.pem"}
    leaf.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    leaf.private_key_pem.write_to_path(str(paths["key"]))
    stranger.private_key_pem.write_to_path(str(paths["other-key"]))
    ca.cert_pem.write_to_path(str(paths["ca"]))
    paths["garbage"].write_text("-----BEGIN CERTIFICATE-----\nnot one\n-----END CERTIFICATE-----\n")
    return {k: str(v) for k, v in paths.items()}


def test_a_certificate_and_its_key_make_a_modern_server_context(files):
    context = server_context(files["cert"], files["key"])
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2 and context.verify_mode == ssl.CERT_NONE
    # with a client CA, a client without a certificate signed by it fails the handshake
    assert server_context(files["cert"], files["key"], files["ca"]).verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize("which, swap, named", [
    ("cert", "missing", "--tls-cert"), ("cert", "garbage", "--tls-cert"), ("key", "missing", "--tls-key"),
    ("key", "other-key", "--tls-key"), ("ca", "missing", "--tls-client-ca"), ("ca", "garbage", "--tls-client-ca")])
def test_a_bad_file_is_a_config_error_naming_the_option_and_the_file(files, tmp_path, which, swap, named):
    given = {"cert": files["cert"], "key": files["key"], "ca": files["ca"]}
    given[which] = str(tmp_path / "nowhere.pem") if swap == "missing" else files[swap]
    with pytest.raises(ConfigError) as bad:
        server_context(given["cert"], given["key"], given["ca"])
    assert named in str(bad.value) and given[which] in str(bad.value), bad.value


def test_the_gateway_refuses_to_start_with_a_missing_certificate(files, tmp_path):
    env = {**ROUTE_ENV, "PATH": "/usr/bin:/bin", "GRIDBUS_HOME": str(tmp_path), "PYTHONUNBUFFERED": "1",
           "GRIDBUS_ENV_FILE": str(tmp_path / "none.env"), "GRIDBUS_BROKER_URL": "amqp://guest:guest@127.0.0.1:9/"}
    missing = str(tmp_path / "gateway.pem")
    # When the option names a file that is not there  Then exit 1 naming option and file, nothing served
    done = run_cli(env, "gateway", "--port", "9", "--tls-cert", missing, "--tls-key", files["key"], timeout=60)
    assert done.returncode == 1 and "--tls-cert" in done.stderr and missing in done.stderr, done.stderr
    assert "gateway: http" not in done.stderr
    # When the setting names it  Then the message names the setting
    done = run_cli({**env, "GRIDBUS_GATEWAY_TLS_CERT": missing}, "gateway", "--port", "9", timeout=60)
    assert done.returncode == 1 and "GRIDBUS_GATEWAY_TLS_CERT" in done.stderr and missing in done.stderr, done.stderr
    # When a key or client CA comes without a certificate  Then that is said
    done = run_cli(env, "gateway", "--port", "9", "--tls-client-ca", files["ca"], timeout=60)
    assert done.returncode == 1 and "without --tls-cert" in done.stderr, done.stderr
