"""A secure node (``cluster up --secure``): generated certificates (both engines), the admin user and its password,
and the config lines that turn TLS and auth on: OpenSearch's security plugin (its version, descriptor and
``internal_users.yml``) and Elasticsearch's x-pack security (its keystore's ``bootstrap.password``)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from milco_os.errors import ClusterError, ConfigError

SECURITY_PLUGIN = "opensearch-security"
SECURITY_PLUGIN_ARTIFACT = "org.opensearch.plugin:opensearch-security:{version}:zip"
#: Node versions for which Maven Central has no security plugin build of their own, mapped to the nearest
#: earlier patch release it has (checked with mvn: for 2.19 it has 2.19.3.0 and 2.19.4.0, not 2.19.6.0).
#: The plugin's descriptor is then widened to a same-minor "~" range, which OpenSearch 2.x honours.
SECURITY_PLUGIN_FALLBACK = {"2.19.6": "2.19.4.0"}
ADMIN_USER = "admin"
#: Distinguished names of the generated certificates, as the security plugin writes them (RFC 2253).
NODE_DN = "CN=localhost,OU=node,O=milco-os"
ADMIN_DN = "CN=admin,OU=client,O=milco-os"
CA_FILE = "root-ca.pem"


def security_plugin_version(version: str) -> str:
    """The security plugin release to install on OpenSearch ``version`` (plugins add a fourth number)."""
    return SECURITY_PLUGIN_FALLBACK.get(version, f"{version}.0")


def widen_descriptor(text: str, node_version: str) -> str:
    """A plugin descriptor that also accepts ``node_version`` when the plugin was built for an earlier patch
    release of the same minor version (OpenSearch otherwise refuses any plugin not built for it exactly)."""
    m = re.search(r"^opensearch\.version=(\S+)$", text, re.MULTILINE)
    if not m or m.group(1) == node_version:
        return text
    built = m.group(1)
    same_minor = built.split(".")[:2] == node_version.split(".")[:2]
    if not same_minor or tuple(map(int, built.split("."))) > tuple(map(int, node_version.split("."))):
        msg = f"the security plugin was built for OpenSearch {built}, which cannot run on {node_version}"
        raise ClusterError(msg)
    return text.replace(m.group(0), f'dependencies={{ opensearch: "~{built}" }}')


def _openssl(*args: str) -> None:
    import subprocess

    openssl = shutil.which("openssl")
    if not openssl:
        msg = "openssl is needed to generate the secure node's certificates; install it (apt-get install openssl)"
        raise ClusterError(msg)
    proc = subprocess.run([openssl, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        msg = f"openssl {args[0]} failed: {' '.join(proc.stderr.split())[:300]}"
        raise ClusterError(msg)


def _openssl_config(dn: dict[str, str], extensions: dict[str, str]) -> str:
    """An openssl config of our own, so the system's openssl.cnf defaults cannot add or clash with extensions."""
    lines = ["[req]", "distinguished_name = dn", "x509_extensions = ext", "prompt = no", "[dn]"]
    lines += [f"{k} = {v}" for k, v in dn.items()]
    lines += ["[ext]"] + [f"{k} = {v}" for k, v in extensions.items()]
    return "\n".join(lines) + "\n"


def _new_key(path: Path) -> None:
    # genpkey writes PKCS#8 ("BEGIN PRIVATE KEY"), the only PEM key format the security plugin reads.
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(path))
    os.chmod(path, 0o600)


def generate_certs(cert_dir: Path, days: int = 3650) -> Path:
    """A self-signed root CA plus, signed by it, the node's certificate (SAN localhost / 127.0.0.1 / ::1) and an
    admin client certificate, as PEM files in ``cert_dir``. Returns the CA certificate's path.

    Keys are mode 0600. Strict verifiers (Python 3.13+) want key usages and key identifiers: all are set."""
    import secrets
    import tempfile

    cert_dir.mkdir(parents=True, exist_ok=True)
    ca_key, ca = cert_dir / "root-ca-key.pem", cert_dir / CA_FILE
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _new_key(ca_key)
        (work / "ca.cnf").write_text(
            _openssl_config(
                {"O": "milco-os", "CN": "milco-os local root CA"},
                {
                    "basicConstraints": "critical, CA:TRUE",
                    "keyUsage": "critical, keyCertSign, cRLSign",
                    "subjectKeyIdentifier": "hash",
                },
            ),
            encoding="utf-8",
        )
        _openssl("req", "-x509", "-new", "-config", str(work / "ca.cnf"), "-key", str(ca_key),
                 "-sha256", "-days", str(days), "-out", str(ca))
        leaves = {
            # (O, OU, CN) in this order print as NODE_DN / ADMIN_DN in RFC 2253 (most specific first).
            "node": ({"O": "milco-os", "OU": "node", "CN": "localhost"},
                     "serverAuth, clientAuth", "DNS:localhost, IP:127.0.0.1, IP:::1"),
            "admin": ({"O": "milco-os", "OU": "client", "CN": "admin"}, "clientAuth", None),
        }
        for name, (dn, usage, san) in leaves.items():
            ext = {
                "basicConstraints": "critical, CA:FALSE",
                "keyUsage": "critical, digitalSignature, keyEncipherment",
                "extendedKeyUsage": usage,
                "subjectKeyIdentifier": "hash",
                "authorityKeyIdentifier": "keyid",
            }
            if san:
                ext["subjectAltName"] = san
            cnf, csr, key = work / f"{name}.cnf", work / f"{name}.csr", cert_dir / f"{name}-key.pem"
            cnf.write_text(_openssl_config(dn, ext), encoding="utf-8")
            _new_key(key)
            _openssl("req", "-new", "-config", str(cnf), "-key", str(key), "-out", str(csr))
            _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
                     "-set_serial", str(secrets.randbits(63)), "-sha256", "-days", str(days),
                     "-extfile", str(cnf), "-extensions", "ext", "-out", str(cert_dir / f"{name}.pem"))
    return ca


def read_password(path: Path) -> str:
    """The password in ``path`` (surrounding whitespace stripped); the message never quotes it."""
    try:
        password = Path(path).read_text(encoding="utf-8").strip()
    except OSError as e:
        msg = f"admin password file {path}: cannot read it: {e.strerror}"
        raise ConfigError(msg) from None
    if not password:
        msg = f"admin password file {path}: the file is empty"
        raise ConfigError(msg)
    return password


def hash_password(home: Path, java_home: Path, password: str) -> str:
    """A bcrypt hash of ``password`` for internal_users.yml, made offline by the plugin's own Hasher (what its
    tools/hash.sh runs). The password goes through the environment, not the command line (visible in ps)."""
    import subprocess

    classpath = f"{home / 'plugins' / SECURITY_PLUGIN}/*:{home / 'lib'}/*"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MILCO_OS_ADMIN_PASSWORD": password}
    cmd = [str(java_home / "bin" / "java"), "-cp", classpath, "org.opensearch.security.tools.Hasher",
           "-env", "MILCO_OS_ADMIN_PASSWORD"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        msg = f"cannot hash the admin password with the security plugin's Hasher: {type(e).__name__}"
        raise ClusterError(msg) from None
    hashes = re.findall(r"^\$2[aby]\$\d+\$\S{53}$", proc.stdout, re.MULTILINE)
    if proc.returncode != 0 or not hashes:
        msg = f"cannot hash the admin password with the security plugin's Hasher: {' '.join(proc.stderr.split())[:300]}"
        raise ClusterError(msg)
    return hashes[-1]


def write_internal_users(home: Path, conf: Path, java_home: Path, password: str) -> None:
    """OpenSearch: the security plugin's configuration in ``conf/opensearch-security/``, its stock files with our
    user database (only ``admin``, with ``password`` hashed)."""
    security_conf = conf / "opensearch-security"
    security_conf.mkdir(exist_ok=True)
    for item in (home / "plugins" / SECURITY_PLUGIN / "config").glob("*.yml"):
        shutil.copy2(item, security_conf / item.name)
    password_hash = hash_password(home, java_home, password)
    (security_conf / "internal_users.yml").write_text(internal_users_yml(password_hash), encoding="utf-8")


def internal_users_yml(password_hash: str) -> str:
    """The security plugin's user database: only ``admin`` (the plugin's demo users have well-known passwords)."""
    return (
        "# Written by milco-os (cluster up --secure). Read once, when the security index is first created.\n"
        "_meta:\n  type: \"internalusers\"\n  config_version: 2\n"
        f"{ADMIN_USER}:\n"
        f"  hash: \"{password_hash}\"\n"
        "  reserved: true\n"
        "  backend_roles: [\"admin\"]\n"  # the plugin's roles_mapping.yml maps it to all_access
        "  description: \"milco-os local admin\"\n"
    )


def security_settings() -> str:
    """The opensearch.yml lines of a secure node (certificate paths are relative to its config directory)."""
    return (
        "# Security plugin: TLS on HTTP and transport with the generated certificates, basic auth for admin.\n"
        "plugins.security.ssl.transport.pemcert_filepath: certs/node.pem\n"
        "plugins.security.ssl.transport.pemkey_filepath: certs/node-key.pem\n"
        f"plugins.security.ssl.transport.pemtrustedcas_filepath: certs/{CA_FILE}\n"
        "plugins.security.ssl.transport.enforce_hostname_verification: false\n"
        "plugins.security.ssl.http.enabled: true\n"
        "plugins.security.ssl.http.pemcert_filepath: certs/node.pem\n"
        "plugins.security.ssl.http.pemkey_filepath: certs/node-key.pem\n"
        f"plugins.security.ssl.http.pemtrustedcas_filepath: certs/{CA_FILE}\n"
        # Create the security index from config/opensearch-security/ on first start (no securityadmin.sh run).
        "plugins.security.allow_default_init_securityindex: true\n"
        f'plugins.security.authcz.admin_dn: ["{ADMIN_DN}"]\n'
        f'plugins.security.nodes_dn: ["{NODE_DN}"]\n'
        'plugins.security.restapi.roles_enabled: ["all_access", "security_rest_api_access"]\n'
        # No audit sink is configured: say so, rather than have the plugin log an error on every start.
        "plugins.security.audit.type: noop\n"
    )


def elasticsearch_security_settings() -> str:
    """The elasticsearch.yml lines of a secure node: x-pack security with TLS on HTTP and transport (the generated
    certificates, relative to its config directory) and basic auth for the built-in superuser ``elastic``."""
    lines = ["# x-pack security: TLS on HTTP and transport with the generated certificates, basic auth for elastic.",
             "xpack.security.enabled: true"]
    for layer in ("http", "transport"):
        lines += [
            f"xpack.security.{layer}.ssl.enabled: true",
            f"xpack.security.{layer}.ssl.certificate: certs/node.pem",
            f"xpack.security.{layer}.ssl.key: certs/node-key.pem",
            f"xpack.security.{layer}.ssl.certificate_authorities: [certs/{CA_FILE}]",
        ]
    # Nodes present the one node certificate (its host names do not name every member).
    lines.append("xpack.security.transport.ssl.verification_mode: certificate")
    return "\n".join(lines) + "\n"


def write_bootstrap_password(home: Path, conf: Path, java_home: Path, password: str) -> None:
    """Elasticsearch: ``password`` as ``bootstrap.password`` in the node's keystore (``conf/elasticsearch.keystore``,
    made anew), which is the built-in ``elastic`` user's password until it is changed through the API (then the
    security index holds it). Written on every start, so a new password file takes effect. The password goes
    through standard input, not the command line (visible in ps)."""
    import subprocess

    # The keystore holds nothing else of value (its random seed is made anew), and the tool will not rewrite one
    # the service user owns when run as root ("changing the file owner").
    (conf / "elasticsearch.keystore").unlink(missing_ok=True)

    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "ES_PATH_CONF": str(conf),
           "ES_JAVA_HOME": str(java_home)}
    cmd = [str(home / "bin" / "elasticsearch-keystore"), "add", "--stdin", "--force", "bootstrap.password"]
    try:
        proc = subprocess.run(cmd, input=password, capture_output=True, text=True, env=env, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        msg = f"cannot write the elastic password into the keystore: {type(e).__name__}"
        raise ClusterError(msg) from None
    if proc.returncode != 0:
        msg = f"cannot write the elastic password into the keystore: {' '.join(proc.stderr.split())[:300]}"
        raise ClusterError(msg)
