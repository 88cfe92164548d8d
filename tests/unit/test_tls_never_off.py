"""Certificate verification is never switched off, anywhere in the code that ships or runs the
dev stack: no ``verify=False``, ``ssl=False``, ``CERT_NONE``, unverified contexts or silenced
warnings.  A destination or a system whose certificate does not verify fails visibly; it is
fixed by configuring its CA (GRIDBUS_DESTINATION_CA, docs/security.md), never by looking away."""
from __future__ import annotations

import re

from tests.support import ROOT

# the code that runs: the packages, the dev distribution, the benchmarks, the route files
WHERE = ("bus", "connectors", "transformers", "dev", "benchmarks", "routes")
SWITCHED_OFF = re.compile(
    r"verify\s*=\s*False|ssl\s*=\s*False|verify_ssl\s*=\s*False|CERT_NONE|check_hostname\s*=\s*False"
    r"|_create_unverified_context|disable_warnings|InsecureRequestWarning|PYTHONHTTPSVERIFY"
    r"|(?:insecure|verify|tls_verify)\s*:\s*(?:false|no|off)\b", re.IGNORECASE)


def _files():
    for top in WHERE:
        for path in sorted((ROOT / top).rglob("*")):
            if path.suffix in (".py", ".yaml", ".yml", ".cfg", ".toml", ".sh") and path.is_file():
                yield path


def test_no_code_switches_certificate_verification_off():
    # Given every source and route file  When it is searched for a way of not verifying
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for path in _files()
             for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1)
             if SWITCHED_OFF.search(line)]
    # Then there is none
    assert not found, "certificate verification switched off:\n" + "\n".join(found)


def test_the_search_would_find_one():
    # the pattern itself, so that the test above cannot pass by matching nothing
    for line in ("requests.get(url, verify=False)", "aiohttp.TCPConnector(ssl=False)",
                 "ctx.verify_mode = ssl.CERT_NONE", "context.check_hostname = False", "ssl._create_unverified_context()",
                 "urllib3.disable_warnings()", "session.get(url, ssl = False)", "tls_verify: false"):
        assert SWITCHED_OFF.search(line), line
    assert sum(1 for _ in _files()) > 100
