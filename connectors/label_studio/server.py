"""Run a local Label Studio server: in its own virtualenv, on loopback, with a preset token.

Label Studio pins Django, numpy and many others; it lives in a virtualenv of its own so it never
clashes with the ML stack. The server is started detached (its own process group) and found
again through a PID file in its data folder, so ``alloop labelstudio up`` can return while the
server keeps running, and ``alloop labelstudio stop`` (or a test fixture) stops it.

Label Studio reads every setting under three names, including plain ``PORT``/``HOST``/...,
so the server is started with a clean environment (``env -i``-style).

Webhooks: Label Studio refuses webhook URLs on loopback and private addresses (403 "URL
resolves to a reserved network address") unless its SSRF protection is off. This local server
runs on 127.0.0.1 next to ``alloop serve``, whose receiver is on 127.0.0.1 too, so it starts with
``LABEL_STUDIO_SSRF_PROTECTION_ENABLED=false``. A shared server should rather keep the
protection and allow just the private ranges (``LABEL_STUDIO_USE_DEFAULT_BANNED_SUBNETS=false``,
as deploy/docker does), or reach alloop at a public address (``alloop serve --public-url``).
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from alloop.errors import ConnectorError, ConnectorUnavailableError

logger = logging.getLogger(__name__)

LABEL_STUDIO_VERSION = "1.23.2"
DEFAULT_VENV = Path(os.environ.get("ALLOOP_LS_VENV", Path.home() / ".cache" / "alloop" / "label-studio-venv"))
ADMIN_EMAIL = "admin@alloop.local"


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex((host, port)) != 0


@dataclass
class LocalLabelStudio:
    """A Label Studio server on ``127.0.0.1:port`` with its data in ``data_dir``.

    The admin password and API token are generated on first use and kept in
    ``<data_dir>/credentials.env`` (mode 600): a file to ``source``, never the project file.
    """

    data_dir: Path
    port: int = 8080
    venv: Path = DEFAULT_VENV
    document_root: Path | None = None
    version: str = LABEL_STUDIO_VERSION
    _creds: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "server.pid"

    @property
    def credentials_file(self) -> Path:
        return self.data_dir / "credentials.env"

    # -- credentials -----------------------------------------------------------------------
    def credentials(self) -> dict[str, str]:
        """URL, token, admin login (generated once per data folder)."""
        if self._creds:
            return self._creds
        f = self.credentials_file
        if f.exists():
            for line in f.read_text().splitlines():
                if line.startswith("export ") and "=" in line:
                    k, v = line[len("export "):].split("=", 1)
                    self._creds[k] = v.strip("'")
        else:
            self._creds = {
                "LABEL_STUDIO_API_KEY": secrets.token_hex(20),
                "ALLOOP_LS_ADMIN_PASSWORD": secrets.token_urlsafe(12),
            }
        self._creds["LABEL_STUDIO_URL"] = self.url
        self._creds["ALLOOP_LS_ADMIN_EMAIL"] = ADMIN_EMAIL
        if self.document_root is not None:
            self._creds["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] = str(self.document_root)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        text = "".join(f"export {k}='{v}'\n" for k, v in sorted(self._creds.items()))
        fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        return self._creds

    # -- install -----------------------------------------------------------------------------
    @property
    def executable(self) -> Path:
        return self.venv / "bin" / "label-studio"

    def installed(self) -> bool:
        return self.executable.exists()

    def install(self) -> None:
        """Create the server's own virtualenv and install Label Studio (about 1.5 min, 1 GB)."""
        if self.installed():
            return
        logger.warning("Installing label-studio==%s into %s (one time, about 2 minutes)", self.version, self.venv)
        self.venv.parent.mkdir(parents=True, exist_ok=True)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(self.venv)], check=True, capture_output=True, text=True)
            subprocess.run(
                [str(self.venv / "bin" / "pip"), "install", "--quiet", f"label-studio=={self.version}"],
                check=True, capture_output=True, text=True,
            )
        except subprocess.CalledProcessError as exc:
            raise ConnectorError(
                f"Installing Label Studio into {self.venv} failed:\n{exc.stderr[-2000:]}\n"
                "Check network access to PyPI, or set ALLOOP_LS_VENV to a virtualenv that has label-studio."
            ) from None

    # -- run -------------------------------------------------------------------------------------
    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
            os.kill(pid, 0)
            return pid
        except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
            return None

    def ready(self) -> bool:
        token = self.credentials()["LABEL_STUDIO_API_KEY"]
        try:
            r = httpx.get(f"{self.url}/api/projects", params={"page_size": 1},
                          headers={"Authorization": f"Token {token}"}, timeout=5)
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    def start(self, timeout: float = 240.0) -> str:
        """Start (or find running) and wait until the API answers; returns the URL."""
        if self.pid() is not None and self.ready():
            return self.url
        if not self.installed():
            raise ConnectorError(
                f"Label Studio is not installed in {self.venv}. Run `alloop labelstudio up` (installs it) "
                "or set ALLOOP_LS_VENV to a virtualenv with label-studio."
            )
        if not port_is_free(self.port):
            raise ConnectorError(
                f"Port {self.port} on 127.0.0.1 is already in use (Label Studio would silently move to another "
                "port). Stop what uses it, or pass --port."
            )
        creds = self.credentials()
        env = {
            "PATH": f"{self.venv / 'bin'}:/usr/bin:/bin",
            "HOME": str(self.data_dir / "home"),
            "LANG": "C.UTF-8",
            "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir),
            "LABEL_STUDIO_USERNAME": ADMIN_EMAIL,
            "LABEL_STUDIO_PASSWORD": creds["ALLOOP_LS_ADMIN_PASSWORD"],
            "LABEL_STUDIO_USER_TOKEN": creds["LABEL_STUDIO_API_KEY"],
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_SSRF_PROTECTION_ENABLED": "false",  # webhooks to `alloop serve` on 127.0.0.1
            "LABEL_STUDIO_ML_BLOCK_LOCAL_IP": "false",  # and its ML backend (`alloop labelstudio connect`)
            "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
            "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
        }
        if self.document_root is not None:
            env["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] = "true"
            env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] = str(self.document_root)
        (self.data_dir / "home").mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / "server.log", "ab") as log:  # the child keeps its own handle
            proc = subprocess.Popen(
                [str(self.executable), "start", "--no-browser", "--internal-host", "127.0.0.1",
                 "--port", str(self.port), "--data-dir", str(self.data_dir), "--log-level", "WARNING"],
                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        self.pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = (self.data_dir / "server.log").read_text(errors="replace")[-3000:]
                raise ConnectorError(f"Label Studio exited with status {proc.returncode} while starting:\n{tail}")
            if self.ready():
                logger.info("Label Studio ready at %s", self.url)
                return self.url
            time.sleep(0.5)
        self.stop()
        raise ConnectorUnavailableError(f"Label Studio did not answer at {self.url} within {timeout:.0f} s.")

    def stop(self, grace: float = 10.0) -> bool:
        """Stop the server's whole process group; True if one was running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                try:  # reap it if it is our child
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
                time.sleep(0.1)
            else:
                continue
            break
        self.pid_file.unlink(missing_ok=True)
        return True
