"""Connecting to Ray: the address forms, a bounded reachability check, a local loopback cluster.

``ray.init`` waits for an unreachable head for minutes (it retries the GCS connection, then the
cluster id, each with its own timeouts). Before calling it, :func:`probe` opens a TCP connection
and checks that the head answers an HTTP/2 preface as gRPC servers do, all within ``timeout``
seconds (name resolution included), so a wrong host, a closed port, a firewall or a port of
another service gives an :class:`~alloop.errors.ExecutionUnavailableError` quickly.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from alloop.errors import ConfigError, ExecutionError, ExecutionUnavailableError

logger = logging.getLogger(__name__)

#: seconds to reach a head node (TCP connect + gRPC handshake) before giving up
CONNECT_TIMEOUT_S = 10.0

_FORMS = (
    '"auto", "ray://<host>:<port>" (Ray Client, port 10001), "<host>:<port>" (the head\'s GCS, port 6379) '
    'or "local"'
)


def import_ray() -> ModuleType:
    """``import ray``, or a ConfigError saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            "[execution] backend = \"ray\" needs Ray, which is not installed here: "
            "pip install 'alloop[ray]' (Ray with Ray Data), or set backend = \"local\" in alloop.toml."
        ) from exc
    return ray


@dataclass(frozen=True)
class Target:
    """Where to connect: ``local`` (start a cluster in this process), ``client`` (ray://) or ``gcs``."""

    given: str
    kind: Literal["local", "client", "gcs"]
    host: str = ""
    port: int = 0

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ray://{host}:{self.port}" if self.kind == "client" else f"{host}:{self.port}"


def _host_port(text: str, given: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"Invalid [execution] address {given!r}: expected {_FORMS}.")
    return host, int(port)


def parse_address(address: str | None) -> Target:
    """Turn ``[execution] address`` into a :class:`Target`; ``auto`` is looked up as Ray does.

    Raises
    ------
    ConfigError
        The address has none of the accepted forms.
    ExecutionUnavailableError
        ``auto``, but no cluster is recorded on this machine and ``RAY_ADDRESS`` is unset.
    """
    given = "local" if address is None else address.strip()
    if given in ("", "local"):
        return Target(given or "local", "local")
    if given == "auto":
        ray = import_ray()
        try:
            from ray._private.services import get_ray_address_from_environment

            found = get_ray_address_from_environment("auto", None)
        except ConnectionError as exc:
            raise ExecutionUnavailableError(
                "auto",
                "no running Ray cluster was found (RAY_ADDRESS is unset and no `ray start` cluster is "
                f"recorded on this machine; Ray {ray.__version__} says: {exc})",
                hint="Run alloop on a node of the cluster (or as a RayJob), or set [execution] address to "
                '"<head>:6379" or "ray://<head>:10001".',
            ) from exc
        if not found or found == "auto":
            raise ExecutionUnavailableError("auto", "no running Ray cluster was found on this machine")
        if found.startswith("ray://"):
            return Target("auto", "client", *_host_port(found.removeprefix("ray://"), "auto"))
        return Target("auto", "gcs", *_host_port(found, "auto"))
    if given.startswith("ray://"):
        return Target(given, "client", *_host_port(given.removeprefix("ray://"), given))
    if "://" in given:
        raise ConfigError(f"Invalid [execution] address {given!r}: expected {_FORMS}.")
    return Target(given, "gcs", *_host_port(given, given))


def probe(target: Target, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Check within ``timeout`` seconds that a gRPC server (a Ray head) answers at ``target``.

    Name resolution, the TCP connection and an HTTP/2 preface answered by a SETTINGS frame (what
    every gRPC server sends first) share the one deadline.
    """
    if target.kind == "local":
        return
    deadline = time.monotonic() + timeout
    where = f"{target.host}:{target.port}"
    addresses = _resolve(target, timeout)
    sock = None
    error: OSError | None = None
    for family, kind, proto, _, sockaddr in addresses:
        sock = socket.socket(family, kind, proto)
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            sock.connect(sockaddr)
            break
        except OSError as exc:
            sock.close()
            sock, error = None, exc
    if sock is None:
        if isinstance(error, TimeoutError):
            raise ExecutionUnavailableError(
                target.given, f"no answer from {where} within {timeout:.0f} s (a firewall, or a wrong host)"
            ) from error
        reason = getattr(error, "strerror", None) or error
        raise ExecutionUnavailableError(target.given, f"{where} refused the connection ({reason})") from error
    with sock:
        if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
            return  # a TLS handshake needs Ray's certificates: leave it to ray.init
        if not _answers_http2(sock, deadline):
            raise ExecutionUnavailableError(
                target.given,
                f"{where} accepts connections but did not answer as a Ray head (gRPC) within {timeout:.0f} s",
                hint="Check the port: the head's GCS listens on 6379 (address \"<head>:6379\"), Ray Client on "
                '10001 (address "ray://<head>:10001").',
            )


def _resolve(target: Target, timeout: float) -> list[Any]:
    """``getaddrinfo`` within ``timeout`` seconds (the resolver has no timeout of its own)."""
    found: list[Any] = []
    failed: list[OSError] = []

    def run() -> None:
        try:
            found.extend(socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM))
        except OSError as exc:
            failed.append(exc)

    thread = threading.Thread(target=run, name="alloop-resolve", daemon=True)
    thread.start()
    thread.join(timeout)
    if failed:
        raise ExecutionUnavailableError(target.given, f"unknown host {target.host!r} ({failed[0]})") from failed[0]
    if not found:
        raise ExecutionUnavailableError(target.given, f"could not resolve host {target.host!r} within {timeout:.0f} s")
    return found


#: an HTTP/2 client preface and an empty SETTINGS frame (RFC 9113, 3.4)
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _answers_http2(sock: socket.socket, deadline: float) -> bool:
    """Whether the server answers an HTTP/2 preface with a SETTINGS frame (as gRPC servers do)."""
    try:
        sock.sendall(_H2_PREFACE)
        head = b""
        while len(head) < 9:
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            part = sock.recv(9 - len(head))
            if not part:
                return False
            head += part
    except OSError:
        return False
    return head[3] == 0x04  # frame type SETTINGS


@contextmanager
def private_local_cluster() -> Iterator[None]:
    """Settings for a cluster this process starts for itself (``address = "local"``).

    - Loopback only: Ray replaces 127.0.0.1 by the machine's address and listens on every
      interface unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` is off (read when ray is imported,
      and by the processes ``ray.init`` starts), so both are switched for the start.
    - No token authentication, unless ``RAY_AUTH_MODE`` says otherwise: Ray 2.5x would write
      ``~/.ray/auth_token``, after which every ``ray start`` on the machine turns token
      authentication on. Nothing but this process can reach a loopback cluster from another host.
    """
    from ray._private import ray_constants

    saved = {name: os.environ.get(name) for name in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE")}
    saved_const = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if saved_const is not None:
        ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if saved_const is not None:
            ray_constants.ENABLE_RAY_CLUSTER = saved_const


#: what Ray Client's proxy answers when it could not start this client's own server process: its
#: timeout, or (seen under load, Ray 2.60) the new process read while still a zombie
PROXY_START_FAILURES = ("Starting Ray client server failed", "psutil.ZombieProcess")


def init(ray: Any, target: Target, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """``ray.init`` for ``target`` (after :func:`probe`); any failure becomes ExecutionUnavailableError."""
    common: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False, "namespace": "alloop"}
    probe(target, timeout)
    try:
        if target.kind == "local":
            with private_local_cluster():
                ray.init(address="local", include_dashboard=False, **common)
        else:
            try:
                ray.init(address=target.url, **common)
            except ConnectionAbortedError as exc:  # Ray Client's proxy could not spawn this client's
                if not any(m in str(exc) for m in PROXY_START_FAILURES):  # server (a busy head):
                    raise  # once more, as the proxy's own error invites
                logger.warning("Ray Client server did not start at %s; trying once more", target.given)
                ray.shutdown()
                ray.init(address=target.url, **common)
    except Exception as exc:
        try:
            ray.shutdown()
        except Exception:  # pragma: no cover - nothing more to release
            logger.debug("ray.shutdown after a failed ray.init", exc_info=True)
        if target.kind == "local":
            raise ExecutionUnavailableError(
                "local", f"could not start a local Ray cluster: {type(exc).__name__}: {exc}",
                hint="Check free memory and /dev/shm, or set [execution] backend = \"local\".",
            ) from exc
        raise ExecutionUnavailableError(target.given, f"{type(exc).__name__}: {exc}") from exc


def is_client(ray: Any) -> bool:
    """Whether this process talks to Ray through Ray Client (``ray://``)."""
    try:
        from ray.util.client import ray as client_ray

        return bool(client_ray.is_connected())
    except ImportError:  # pragma: no cover - Ray without its client module
        return False


def _read_probe(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"


def check_work_dir(ray: Any, work_dir: Path) -> None:
    """Raise ExecutionError if a node with CPUs or GPUs cannot read ``work_dir`` at the same path.

    The driver writes a small probe file there (removed again) and a zero-CPU task pinned to
    each node reads it. Nothing is checked if the work dir does not exist or cannot be written.
    """
    work_dir = Path(work_dir).absolute()
    token = uuid.uuid4().hex
    probe_file = work_dir / f".alloop-node-check-{token}"
    try:
        probe_file.write_text(token, encoding="utf-8")
    except OSError:
        logger.debug("not checking that the Ray nodes see %s: cannot write there", work_dir, exc_info=True)
        return
    try:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nodes = [n for n in ray.nodes() if n.get("Alive") and
                 (n.get("Resources", {}).get("CPU", 0) > 0 or n.get("Resources", {}).get("GPU", 0) > 0)]
        read = ray.remote(num_cpus=0)(_read_probe)
        refs = [read.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(str(probe_file)) for n in nodes]
        try:
            answers = ray.get(refs, timeout=120)
        except ray.exceptions.GetTimeoutError:
            logger.warning("Could not check within 120 s that every Ray node sees the work dir %s", work_dir)
            return
    finally:
        probe_file.unlink(missing_ok=True)
    bad = [(n, a) for n, a in zip(nodes, answers) if a != token]
    if bad:
        node, answer = bad[0]
        more = f"; {len(bad) - 1} more node(s) too" if len(bad) > 1 else ""
        raise ExecutionError(
            f"The work dir {work_dir} is not shared with every node of the Ray cluster: on node "
            f"{node.get('NodeManagerAddress')} ({str(node['NodeID'])[:12]}) a file written there by this process "
            f"is missing ({answer}){more}. Ray workers read the pool's files and the feature cache from the work "
            f"dir: mount the same shared volume (NFS, a ReadWriteMany PVC) at {work_dir} on every node, or set "
            '[execution] backend = "local".'
        )


#: what a scoring or selection task imports first: loaded by :func:`warm_up` on every worker
WARM_MODULES = ("alloop.loop.score", "alloop.strategies.kcenter", "sklearn.pipeline", "sklearn.preprocessing",
                "sklearn.linear_model")


def _import_modules(names: tuple[str, ...]) -> int:
    import importlib

    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:  # an optional part missing on this node: the real task will say so
            pass
    return os.getpid()


def warm_up(ray: Any, modules: tuple[str, ...] = WARM_MODULES) -> list[Any]:
    """Start importing ``modules`` in one worker process per CPU of every node; returns the
    task references (:func:`wait_warm` waits for them).

    A fresh Ray worker spends seconds importing alloop and scikit-learn on its first task. Done
    when alloop connects, that cost is paid once per connection (``alloop serve`` connects once),
    not inside the first round's scoring.
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0)(_import_modules)
    refs = []
    for node in ray.nodes():
        cpus = int(node.get("Resources", {}).get("CPU", 0)) if node.get("Alive") else 0
        for _ in range(cpus):
            strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=True)
            refs.append(task.options(scheduling_strategy=strategy).remote(modules))
    return refs


#: seconds :func:`wait_warm` waits at most (a busy cluster may not run the imports soon)
WARM_TIMEOUT_S = 120.0


def wait_warm(ray: Any, refs: list[Any], timeout: float = WARM_TIMEOUT_S) -> None:
    """Wait until the warm-up imports ran (at most ``timeout`` seconds; never an error)."""
    if not refs:
        return
    _, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout)
    if pending:
        logger.info("%d of %d Ray workers were not warmed up within %.0f s; continuing", len(pending),
                    len(refs), timeout)
