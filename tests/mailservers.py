"""Real mail servers on loopback for the bounce-mailbox tests: a private Dovecot (IMAP,
implicit TLS and STARTTLS, IDLE) and a private Postfix that bounces mail for unknown local
users and delivers the bounces into Dovecot's maildir.

Each runs from its own folder (configuration, state, queue, logs) with its own ports, and
is stopped by its PID (Postfix by ``postfix -c FOLDER stop``, which never reaches another
instance). A missing package is installed with apt-get when the tests run as root;
otherwise the tests are skipped saying why — and fail under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.smtp_sink import free_port

DOVECOT_PACKAGES = ("dovecot-imapd",)
#: A file of each package set: present means installed.
DOVECOT_IMAP = "/usr/lib/dovecot/imap"
POSTFIX_PACKAGES = ("postfix",)
POSTFIX_COMMAND = "/usr/sbin/postfix"
#: Where libsasl2-modules puts the PLAIN mechanism on this machine's architecture.
SASL_PLAIN = "/usr/lib/x86_64-linux-gnu/sasl2/libplain.so"
#: A name the test certificates carry besides ``localhost`` (tests resolve it to
#: 127.0.0.1 with a resolver of their own, never the system's).
CERTIFIED_NAME = "imap.mailproxy.test"
#: The domain Postfix delivers (every address) into the bounce user's maildir.
BOUNCE_DOMAIN = "bounce.test"
#: The domain Postfix treats as local: any user there that is not a system account bounces.
LOCAL_DOMAIN = "local.test"


@contextlib.contextmanager
def started(server: Dovecot | Postfix, root: Path) -> Iterator[None]:
    """``server`` started for the block, then stopped and its folder ``root`` removed."""
    try:
        server.start()
        yield
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def missing_server(reason: str) -> None:
    """Skip the test saying why a server is missing; fail instead under ``CI=true``, where
    every server must be there."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: servers must be available)")
    pytest.skip(reason)


def install_packages(needed: str, packages: tuple[str, ...]) -> str | None:
    """Install ``packages`` with apt-get unless the file ``needed`` (one they provide) is
    there; the reason they cannot be had, or None when they are there."""
    if Path(needed).exists():
        return None
    apt = shutil.which("apt-get")
    if apt is None:
        return f"{needed} is missing and there is no apt-get to install {' '.join(packages)}"
    if os.geteuid() != 0:
        return f"{needed} is missing and installing {' '.join(packages)} needs root"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if "postfix" in packages:
        # Without it the package asks how to configure, and would start a system instance.
        subprocess.run(
            ["debconf-set-selections"],
            input="postfix postfix/main_mailer_type select No configuration\n",
            text=True,
            check=False,
            capture_output=True,
        )
    install = [apt, "install", "-y", "-q", *packages]
    done = None
    for attempt in ([install], [[apt, "update", "-q"], install]):
        for cmd in attempt:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if done is not None and done.returncode == 0 and Path(needed).exists():
            return None
    tail = done.stderr[-500:] if done is not None else ""
    return f"apt-get could not install {' '.join(packages)}: {tail}"


@dataclass(frozen=True)
class TestCertificates:
    """A test CA and a server certificate it signed for ``localhost`` and 127.0.0.1."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def make_certificates(folder: Path, *, name: str = "mailproxy test CA") -> TestCertificates:
    """Write a fresh CA and a server certificate (CN/SAN ``localhost``,
    :data:`CERTIFIED_NAME`, 127.0.0.1, ::1) into ``folder``."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.DNSName(CERTIFIED_NAME),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    certs = TestCertificates(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    certs.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    certs.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    certs.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    certs.key_file.chmod(0o600)
    return certs


def wait_for_port(port: int, process: subprocess.Popen[bytes] | None, log: Path) -> None:
    """Wait until something accepts connections on 127.0.0.1:``port`` (or the process
    died: then fail with the end of its log)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            break
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
    raise RuntimeError(f"server did not listen on 127.0.0.1:{port}:\n{tail}")


def mail_owner() -> tuple[int, int]:
    """The uid and gid the maildirs belong to, and Dovecot and Postfix deliver as: the
    system's ``mail`` account (``nobody`` when there is none) — never root, which
    Postfix's virtual(8) refuses."""
    for name in ("mail", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid
    raise RuntimeError("no mail or nobody account to own the maildirs")


@dataclass
class Dovecot:
    """A private Dovecot serving IMAP on 127.0.0.1: ``imaps_port`` (implicit TLS) and
    ``imap_port`` (plain, STARTTLS offered, login allowed in the clear), certificates from
    ``ca_file``'s CA, one maildir per user under ``mail_root``."""

    root: Path
    users: dict[str, str]
    certs: TestCertificates
    #: What the server announces after login, instead of everything it has (e.g. without
    #: IDLE and MOVE, to exercise the clients' other ways).
    capabilities: str | None = None
    imap_port: int = 0
    imaps_port: int = 0
    uid: int = 0
    gid: int = 0
    #: How many extra users to make, for :meth:`add_user`.
    spares: int = 0
    spare: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def ca_file(self) -> Path:
        return self.certs.ca_file

    @property
    def mail_root(self) -> Path:
        return self.root / "mail"

    @property
    def log(self) -> Path:
        return self.root / "dovecot.log"

    def maildir(self, user: str, folder: str = "INBOX") -> Path:
        """The maildir of ``user``'s ``folder`` (Maildir++: subfolders are ``.Name``)."""
        base = self.mail_root / user
        return base if folder == "INBOX" else base / f".{folder}"

    def deliver(self, user: str, raw: bytes, folder: str = "INBOX") -> Path:
        """Drop ``raw`` into ``user``'s maildir ``new/`` as a delivery agent would (written
        in ``tmp/``, then renamed); Dovecot assigns its UID when it next looks."""
        maildir = self.maildir(user, folder)
        name = f"{time.time_ns()}.{uuid.uuid4().hex}.mailproxy-test"
        temporary = maildir / "tmp" / name
        temporary.write_bytes(raw)
        os.chown(temporary, self.uid, self.gid)
        final = maildir / "new" / name
        temporary.rename(final)
        return final

    def messages(self, user: str, folder: str = "INBOX") -> list[bytes]:
        """The contents of every message in ``user``'s ``folder`` (new and cur)."""
        maildir = self.maildir(user, folder)
        contents = []
        for sub in ("new", "cur"):
            for path in sorted((maildir / sub).iterdir()) if (maildir / sub).is_dir() else []:
                # Dovecot may move or rename a file (new to cur, flags) between the
                # listing and the read: it is then listed again under its new name.
                with contextlib.suppress(FileNotFoundError):
                    contents.append(path.read_bytes())
        return contents

    def add_user(self) -> tuple[str, str]:
        """A user nobody used yet, with an empty mailbox: its name and password. (From
        a pool made at start: Dovecot rereads its passwd file at most once a second.)"""
        if not self.spare:
            raise RuntimeError("no spare Dovecot user left: start it with more")
        user = self.spare.pop()
        return user, self.users[user]

    def _write_passwd(self) -> None:
        passwd = self.root / "passwd"
        temporary = passwd.with_suffix(".new")
        temporary.write_text(
            "".join(
                f"{user}:{{PLAIN}}{password}:{self.uid}:{self.gid}::{self.mail_root / user}::\n"
                for user, password in self.users.items()
            )
        )
        # Read by Dovecot's auth process, which runs as its own account: test passwords.
        temporary.chmod(0o644)
        temporary.rename(passwd)

    def _make_maildir(self, user: str) -> None:
        base = self.maildir(user)
        for sub in ("", "new", "cur", "tmp"):
            (base / sub).mkdir(parents=True, exist_ok=True)
            os.chown(base / sub, self.uid, self.gid)

    def start(self) -> None:
        self.uid, self.gid = mail_owner()
        self.imap_port, self.imaps_port = free_port(), free_port()
        self.mail_root.mkdir(parents=True, exist_ok=True)
        os.chown(self.mail_root, self.uid, self.gid)
        for n in range(self.spares):
            user = f"spare{n}"
            self.users[user] = f"spare-password-{n}"
            self.spare.insert(0, user)
        for user in self.users:
            self._make_maildir(user)
        self._write_passwd()
        passwd = self.root / "passwd"
        (self.root / "run").mkdir(exist_ok=True)
        (self.root / "state").mkdir(exist_ok=True)
        config = self.root / "dovecot.conf"
        config.write_text(
            f"""\
# A private test instance: everything it writes is under {self.root}.
base_dir = {self.root}/run
state_dir = {self.root}/state
instance_name = mailproxy-test-{self.imap_port}
log_path = {self.log}
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{self.certs.cert_file}
ssl_key = <{self.certs.key_file}
# The plain port is for the tests of STARTTLS and of tls="none": login there is allowed.
disable_plaintext_auth = no
auth_mechanisms = plain login
# The tests of refused logins need no brute-force delay.
auth_failure_delay = 0
first_valid_uid = {self.uid}
first_valid_gid = {self.gid}
mail_location = maildir:~
mail_attribute_dict =
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {passwd}
}}
userdb {{
  driver = passwd-file
  args = {passwd}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.imaps_port}
    ssl = yes
  }}
}}
# No growing delay after refused logins from the same address (the tests make several).
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service stats {{
  inet_listener http {{
    port = 0
  }}
}}
namespace inbox {{
  inbox = yes
  separator = .
}}
protocol imap {{
{f"  imap_capability = {self.capabilities}" if self.capabilities else ""}
  mail_max_userip_connections = 100
  mailbox_idle_check_interval = 1 secs
}}
"""
        )
        dovecot = shutil.which("dovecot") or "/usr/sbin/dovecot"
        with (self.root / "dovecot.stderr").open("wb") as stderr:
            self.process = subprocess.Popen(
                [dovecot, "-F", "-c", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            wait_for_port(self.imap_port, self.process, self.log)
            wait_for_port(self.imaps_port, self.process, self.log)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def private_folder(prefix: str) -> Path:
    """A fresh folder under the system's temporary folder that the mail accounts can
    traverse (pytest's own temporary folders are private to root)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)
    return folder


@contextlib.contextmanager
def running_dovecot(
    users: dict[str, str], *, spares: int = 0, capabilities: str | None = None
) -> Iterator[Dovecot]:
    """A started :class:`Dovecot` with ``users`` (name → password) and ``spares`` more
    for :meth:`Dovecot.add_user`, announcing ``capabilities`` after login when given;
    stopped and removed afterwards. Skips (fails under CI) when Dovecot is missing and cannot be installed."""
    missing = install_packages(DOVECOT_IMAP, DOVECOT_PACKAGES)
    if missing is not None:
        missing_server(f"Dovecot tests skipped: {missing}")
    if os.geteuid() != 0:
        missing_server("Dovecot tests skipped: the private Dovecot needs root (mail uid)")
    root = private_folder("mailproxy-dovecot-")
    server = Dovecot(
        root=root,
        users=dict(users),
        certs=make_certificates(root / "tls"),
        capabilities=capabilities,
        spares=spares,
    )
    with started(server, root):
        yield server


@contextlib.contextmanager
def relaying_postfix(port: int, user: str, password: str) -> Iterator[Postfix]:
    """A started :class:`Postfix` that relays every message it accepts to 127.0.0.1:
    ``port`` (its ``relayhost``) with SMTP AUTH as ``user``; stopped and removed
    afterwards. Skips (fails under CI) when Postfix is missing and cannot be installed."""
    missing = install_packages(POSTFIX_COMMAND, POSTFIX_PACKAGES)
    # Postfix's SASL client needs the PLAIN mechanism's module.
    plain = next(iter(sorted(Path("/usr/lib").glob("*/sasl2/libplain.so"))), SASL_PLAIN)
    missing = missing or install_packages(str(plain), ("libsasl2-modules",))
    if missing is not None:
        missing_server(f"Postfix relay tests skipped: {missing}")
    root = private_folder("mailproxy-postfix-")
    server = Postfix(root=root, dovecot=None, mailbox_user="nobody", relay=(port, user, password))
    with started(server, root):
        yield server


#: The services of the private Postfix (master.cf), none chrooted: ``{smtpd}`` is the
#: loopback listener. Mail that is not for the two test domains goes to error(8):
#: nothing ever leaves the machine.
_MASTER_CF = """\
{smtpd} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n -  0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n -  - trivial-rewrite
bounce    unix  - - n -  0 bounce
defer     unix  - - n -  0 bounce
trace     unix  - - n -  0 bounce
verify    unix  - - n -  1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -  - proxymap
showq     unix  n - n -  - showq
error     unix  - - n -  - error
smtp      unix  - - n -  - smtp
retry     unix  - - n -  - error
discard   unix  - - n -  - discard
local     unix  - n n -  - local
virtual   unix  - n n -  - virtual
anvil     unix  - - n -  1 anvil
scache    unix  - - n -  1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


@dataclass
class Postfix:
    """A private Postfix: SMTP on 127.0.0.1:``port``; ``LOCAL_DOMAIN`` is local (a user
    that is no system account bounces, with a DSN, after being accepted at RCPT);
    every address of ``BOUNCE_DOMAIN`` is delivered into ``dovecot``'s maildir of
    ``mailbox_user``."""

    root: Path
    dovecot: Dovecot | None
    mailbox_user: str
    port: int = 0
    #: ``(port, user, password)``: relay everything to 127.0.0.1:port with SMTP AUTH (a
    #: smarthost, as Postfix's ``relayhost``), instead of refusing it.
    relay: tuple[int, str, str] | None = None

    @property
    def config_dir(self) -> Path:
        return self.root / "etc"

    @property
    def log(self) -> Path:
        return self.root / "maillog"

    def _postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [POSTFIX_COMMAND, "-c", str(self.config_dir), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def start(self) -> None:
        self.port = free_port()
        postfix_account = pwd.getpwnam("postfix")
        self.config_dir.mkdir(parents=True)
        (self.root / "queue").mkdir()
        data = self.root / "data"
        data.mkdir()
        os.chown(data, postfix_account.pw_uid, postfix_account.pw_gid)
        spool = self.root / "spool"
        spool.mkdir(mode=0o1777)
        (self.config_dir / "virtual_mailboxes").write_text(
            f"/@{BOUNCE_DOMAIN.replace('.', '[.]')}$/ {self.mailbox_user}/\n"
        )
        mail_root = self.dovecot.mail_root if self.dovecot else self.root / "mail"
        uid, gid = (self.dovecot.uid, self.dovecot.gid) if self.dovecot else mail_owner()
        (self.config_dir / "master.cf").write_text(
            _MASTER_CF.format(smtpd=f"127.0.0.1:{self.port}")
        )
        (self.config_dir / "main.cf").write_text(
            f"""\
# A private test instance: everything it writes is under {self.root}.
compatibility_level = 3.6
queue_directory = {self.root}/queue
data_directory = {data}
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
mail_owner = postfix
setgid_group = postdrop
maillog_file = {self.log}
maillog_file_prefixes = {self.root}
myhostname = mx.{LOCAL_DOMAIN}
mydomain = {LOCAL_DOMAIN}
myorigin = {LOCAL_DOMAIN}
mydestination = {LOCAL_DOMAIN}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
# Accept any local user at RCPT; local(8) then bounces the unknown ones.
local_recipient_maps =
alias_maps =
alias_database =
mail_spool_directory = {spool}/
virtual_mailbox_domains = {BOUNCE_DOMAIN}
virtual_mailbox_base = {mail_root}
virtual_mailbox_maps = regexp:{self.config_dir}/virtual_mailboxes
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = 1
smtp_dns_support_level = disabled
{self._outbound()}biff = no
smtpd_banner = $myhostname ESMTP
delay_warning_time = 0
"""
        )
        started = self._postfix("start")
        if started.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            self.stop()
            raise RuntimeError(f"postfix did not start: {started.stdout}{started.stderr}\n{tail}")
        wait_for_port(self.port, None, self.log)

    def _outbound(self) -> str:
        """Nothing leaves but to the loopback relay: no DNS, and without a relay anything
        not for the test domains is refused."""
        if self.relay is None:
            return (
                "default_transport = error:the test instance sends nothing out\n"
                "relay_transport = error:the test instance sends nothing out\n"
                "relayhost =\n"
            )
        port, user, password = self.relay
        return (
            f"relayhost = [127.0.0.1]:{port}\n"
            "smtp_sasl_auth_enable = yes\n"
            f"smtp_sasl_password_maps = inline:{{ [127.0.0.1]:{port}={user}:{password} }}\n"
            "smtp_sasl_security_options = noanonymous\n"
            "smtp_sasl_mechanism_filter = plain, login\n"
            "smtp_tls_security_level = none\n"
        )

    def stop(self) -> None:
        pid_file = self.root / "queue" / "pid" / "master.pid"
        self._postfix("stop")
        # The master may still be exiting, or 'stop' failed: end it by its own PID.
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text().strip())
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                os.kill(pid, 0)
                time.sleep(0.1)
            os.kill(pid, signal.SIGKILL)

    def delivered(self) -> list[bytes]:
        """What arrived for ``BOUNCE_DOMAIN`` (the bounce user's INBOX)."""
        assert self.dovecot is not None
        return self.dovecot.messages(self.mailbox_user)


@contextlib.contextmanager
def running_postfix(dovecot: Dovecot, mailbox_user: str) -> Iterator[Postfix]:
    """A started :class:`Postfix` delivering ``BOUNCE_DOMAIN`` into ``dovecot``'s
    ``mailbox_user``; stopped and removed afterwards. Skips (fails under CI) when
    Postfix is missing and cannot be installed."""
    missing = install_packages(POSTFIX_COMMAND, POSTFIX_PACKAGES)
    if missing is not None:
        missing_server(f"Postfix tests skipped: {missing}")
    root = private_folder("mailproxy-postfix-")
    server = Postfix(root=root, dovecot=dovecot, mailbox_user=mailbox_user)
    with started(server, root):
        yield server
