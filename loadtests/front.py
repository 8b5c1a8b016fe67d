"""A native front for the overload benchmark: nginx in front of ``mnist-serve serve``.

nginx's ``limit_conn`` counts the POSTs in flight through it (a connection counts only while
one of its requests is being served; GETs are never counted) and answers the one over
``limit`` with our own 503 body and ``Retry-After``, from C, so that a refusal costs no Python
at all. Every other request goes to our server over kept-alive upstream connections; our
server's own answers, 503s included, pass through unchanged; the front's own 503s carry
``X-Refused-By: front``. Behind the front, our server's holds (``--shed-hold``) would apply to
nginx's pooled upstream connections, so the front's limit sits below ``--max-in-flight``.
``scripts/bench_overload.py --servers defaults,nginx`` measures it against our own shedding
(docs/benchmarks.md, section W).

It is a benchmark's tool, not part of the service: nginx comes from Debian (``make nginx``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from loadtests.procs import free_port, wait_for_port
from service.admission import SHED_BODY

INSTALL_HINT = "apt-get install nginx-light (or: make nginx)"


class NginxNotFound(RuntimeError):
    """No ``nginx`` on PATH."""


@dataclass(frozen=True)
class Front:
    """How the front refuses: at most ``limit`` requests in flight through it; ``nice``, its
    scheduling niceness (negative: ahead of the server on a shared core; needs root)."""

    limit: int = 64
    nice: int = 0

    def problem(self) -> str | None:
        """Why this front cannot start here, if it cannot (checked before any measurement)."""
        if self.limit < 1:
            return "--front-limit must be at least 1"
        if not -20 <= self.nice <= 19:
            return "--front-nice must lie in -20..19"
        if self.nice < 0 and os.geteuid() != 0:
            return "--front-nice below 0 needs root"
        return None


def config(front: Front, port: int, upstream_port: int, work: Path) -> str:
    """nginx's configuration: one worker on 127.0.0.1:``port``, everything it writes in ``work``."""
    temp = "\n".join(
        f"  {kind}_temp_path {work / kind};" for kind in ("client_body", "proxy", "fastcgi")
    )
    body = SHED_BODY.decode()
    if "'" in body:  # pragma: no cover - our body is JSON without quotes of that kind
        raise ValueError("the shed body must not hold a single quote")
    return f"""\
worker_processes 1;
daemon off;
pid {work / "nginx.pid"};
error_log {work / "error.log"} warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
{temp}
  uwsgi_temp_path {work / "uwsgi"};
  scgi_temp_path {work / "scgi"};
  # POSTs only, as our own limit: a request whose key is empty is not counted (GETs never shed).
  map $request_method $inflight_key {{
    POST $server_name;
    default "";
  }}
  limit_conn_zone $inflight_key zone=inflight:1m;
  limit_conn_status 503;
  limit_conn_log_level info;
  upstream mnist_serve {{
    server 127.0.0.1:{upstream_port};
    keepalive {2 * front.limit};
    keepalive_timeout 4s;  # under our server's --keep-alive-s (5): nginx closes first
  }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    server_name front;
    keepalive_requests 1000000;
    client_max_body_size 0;  # our server's own limit answers (413), as it would directly
    proxy_request_buffering off;  # the body streams to our server, no temporary file
    location / {{
      limit_conn inflight {front.limit};
      proxy_pass http://mnist_serve;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      error_page 503 = @shed;
    }}
    location @shed {{
      add_header Retry-After 1 always;
      add_header X-Refused-By front always;  # our server's own 503s have no such header
      default_type application/json;
      return 503 '{body}';
    }}
  }}
}}
"""


def nginx_binary() -> str:
    """The ``nginx`` executable; :class:`NginxNotFound` naming the install if there is none."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise NginxNotFound(f"nginx not found: {INSTALL_HINT}")
    return found


@contextlib.contextmanager
def run_front(
    upstream_port: int, front: Front, work: Path, cpus: Collection[int] | None = None
) -> Iterator[str]:
    """Start nginx in front of 127.0.0.1:``upstream_port`` (on ``cpus`` if given, at
    ``front.nice``); yield its base URL; stop it on exit."""
    binary = nginx_binary()
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = work / "nginx.conf"
    conf.write_text(config(front, port, upstream_port, work))

    def setup() -> None:  # in the child, before nginx starts
        if cpus is not None:
            os.sched_setaffinity(0, cpus)
        if front.nice:
            os.nice(front.nice)

    log = work / "nginx.out"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [binary, "-p", str(work), "-e", str(work / "error.log"), "-c", str(conf)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            preexec_fn=setup,
            start_new_session=True,  # its own process group: master and worker stop together
        )
    try:
        try:
            wait_for_port(port, process, timeout=20)
        except Exception as err:
            errors = (work / "error.log").read_text() if (work / "error.log").exists() else ""
            raise RuntimeError(f"nginx did not start: {err}\n{log.read_text()}{errors}") from err
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()  # SIGTERM: nginx's fast shutdown
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
