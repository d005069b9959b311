"""A warm worker for ``harness run``: a fork server that has torch, numpy, pandas and ``datasets``
imported, so a DAG job does not pay 1.5-2 s of imports for a run of a few seconds.

    HARNESS_WORKER=1 python -m harness run ...     # the Snakefile sets it for local jobs
    python -m harness.worker status                # this user's servers
    python -m harness.worker stop                  # stop them (running runs finish first)

The client (``python -m harness run`` with ``HARNESS_WORKER=1``; see ``harness/__main__.py``) imports
nothing heavy. It connects to the server of its key (:func:`server_key`: interpreter, sys.path, cwd,
import-time environment, the harness sources), starting one if none is live, and hands over its
argv, cwd, environment and its stdin/stdout/stderr file descriptors (SCM_RIGHTS). The server forks
a child that becomes the client's process (those fds on 0/1/2, that cwd and environment), runs
``harness.cli.main`` and reports its exit status. So one run is still one process of its own: a
crash, an OOM kill or a SIGKILL of one run touches no other, and the record is the child's.

- The client forwards SIGINT, SIGTERM and SIGHUP to the child and exits as the child did (killed by
  the same signal when it forwarded it, so Snakemake sees what it would see in process).
- A client that dies (SIGKILLed by Snakemake or a user) closes its connection: the child sees EOF and
  SIGKILLs itself at once, so no orphan keeps computing or writes a record later.
- Never inside a SLURM job (``SLURM_JOB_ID`` set): a server forked in one job's cgroup would die
  with that job and take other jobs' runs with it. There each run imports in its own process.
- Anything that goes wrong before the run is handed over falls back to running in process.
- The server pre-imports modules only: no torch op, no thread pool, no CUDA (OpenMP and CUDA are
  not fork-safe once started). Task plugins are imported by each child, fresh.
- It exits after ``--idle-timeout`` seconds (``HARNESS_WORKER_IDLE``, default 120) with no request
  and no running child. A client waits ``HARNESS_WORKER_START_WAIT`` seconds (default 60) for a
  server it started before running in process. Socket, lock, pid file and log: ``<key>.*`` in
  ``$XDG_RUNTIME_DIR/harness-worker/`` or ``/tmp/harness-worker-<uid>/`` (mode 0700).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import resource
import signal
import socket
import stat
import struct
import sys
import time

SWITCH = "HARNESS_WORKER"
IDLE_ENV = "HARNESS_WORKER_IDLE"  # seconds a server waits for its next run before it exits
IDLE_TIMEOUT = 120.0
START_WAIT_ENV = "HARNESS_WORKER_START_WAIT"  # seconds a client waits for a starting server, then runs
START_WAIT = 60.0                             # in process (the server comes up for the next jobs)
ACK_WAIT = 60.0  # seconds a client waits for a live server to take its run
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
GLOBAL_OPTIONS = ("--results", "--registry")  # harness's options before the sub-command
# Environment read when torch, numpy, datasets & co. are imported (thread pools, caches, allocators,
# the stdio encoding): a server imported them with its own values, so they are part of its key.
KEY_ENV_PREFIXES = ("OMP_", "GOMP_", "MKL_", "OPENBLAS_", "KMP_", "CUDA", "NVIDIA", "TORCH", "PYTORCH",
                    "TRITON", "HF_", "PYTHON", "LD_", "NUMEXPR", "XDG_", "HARNESS_", "ARROW_", "MALLOC_",
                    "LC_")
KEY_ENV_NAMES = ("HOME", "LANG", "TMPDIR", "GLIBC_TUNABLES")
# What the server imports before forking: what every run imports, and the harness's run path.
# torch._dynamo is what a torch.optim optimizer's first step imports (~2 s, in most tasks' runs);
# importing it starts no thread and no compilation.
PREIMPORT = ("numpy", "torch", "torch._dynamo", "pandas", "datasets", "harness.api", "harness.config",
             "harness.data", "harness.record", "harness.plugins", "harness.provenance", "harness.runner",
             "harness.cli")
RLIMITS = ("RLIMIT_AS", "RLIMIT_DATA", "RLIMIT_RSS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_CORE",
           "RLIMIT_STACK", "RLIMIT_NPROC", "RLIMIT_MEMLOCK")
SUN_PATH_MAX = 107  # bytes of a Unix socket path, with room for the NUL


class WorkerUnavailable(RuntimeError):
    """No server could take the run; the client runs it in process."""


# -- switch, key and files --------------------------------------------------------------------

def wanted(argv: list[str], environ=os.environ) -> bool:
    """``harness ... run ...`` with HARNESS_WORKER=1, outside SLURM."""
    if environ.get(SWITCH) != "1" or environ.get("SLURM_JOB_ID"):
        return False
    args = argv[1:]
    if "-h" in args or "--help" in args:
        return False
    i = 0
    while i < len(args):
        if args[i] in GLOBAL_OPTIONS:
            i += 2
        elif args[i].startswith(tuple(o + "=" for o in GLOBAL_OPTIONS)):
            i += 1
        else:
            return args[i] == "run"
    return False


def _interpreter_flags() -> list:
    return [list(sys.flags), sorted(sys._xoptions.items()), list(sys.warnoptions)]


def _source_stamps(package_dir: str) -> list:
    """(path, size, mtime_ns) of every .py of the package: an edited harness gets a new server."""
    stamps = []
    for dirpath, dirnames, filenames in os.walk(package_dir):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(".py"):
                st = os.stat(os.path.join(dirpath, name))
                stamps.append((os.path.relpath(os.path.join(dirpath, name), package_dir), st.st_size, st.st_mtime_ns))
    return stamps


def _installed_stamps(path: list[str]) -> list:
    """mtime of each site-packages folder: installing or removing a package changes it."""
    out = []
    for p in path:
        if p.endswith(("site-packages", "dist-packages")) and os.path.isdir(p):
            out.append((p, os.stat(p).st_mtime_ns))
    return out


def server_key(environ=os.environ, cwd: str | None = None, package_dir: str | None = None) -> str:
    """Which server may run this client's run: equal keys import equal code with equal settings."""
    parts = {
        "python": [sys.executable, sys.version, _interpreter_flags()],
        "path": list(sys.path),
        "cwd": cwd or os.getcwd(),
        "env": sorted((k, v) for k, v in environ.items() if k.startswith(KEY_ENV_PREFIXES) or k in KEY_ENV_NAMES),
        # A child inherits the server's niceness and resource limits (`ulimit -v` ...) and may not undo them.
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "limits": [resource.getrlimit(getattr(resource, name)) for name in RLIMITS],
        "harness": _source_stamps(package_dir or os.path.dirname(os.path.abspath(__file__))),
        "installed": _installed_stamps(sys.path),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def socket_dir(environ=os.environ) -> str:
    """$XDG_RUNTIME_DIR/harness-worker or /tmp/harness-worker-<uid>: private to this user (0700)."""
    base = environ.get("XDG_RUNTIME_DIR")
    folder = os.path.join(base, "harness-worker") if base else f"/tmp/harness-worker-{os.getuid()}"
    os.makedirs(folder, mode=0o700, exist_ok=True)
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise WorkerUnavailable(f"{folder} is not a folder private to this user (owner uid {os.getuid()}, "
                                "mode 0700): remove it")
    return folder


class Files:
    """The server's socket, lock, pid file and log, all named by its key."""

    def __init__(self, folder: str, key: str):
        self.key = key
        self.sock, self.lock, self.pid, self.log = (os.path.join(folder, f"{key}.{ext}")
                                                    for ext in ("sock", "lock", "pid", "log"))

    @classmethod
    def of_socket(cls, sock: str) -> Files:
        folder, name = os.path.split(sock)
        return cls(folder, name.rsplit(".", 1)[0])


def _warn(message: str) -> None:
    print(f"harness: warm worker unavailable ({message}); running in this process", file=sys.stderr)


# -- client -----------------------------------------------------------------------------------

def client_main(argv: list[str]) -> int | None:
    """Run ``argv`` (a ``harness run`` command line) in a warm worker and return its exit status,
    or None when it should run in this process (not wanted, or no server could take it)."""
    if not wanted(argv):
        return None
    try:
        files = Files(socket_dir(), server_key())
        if len(files.sock.encode()) > SUN_PATH_MAX:
            raise WorkerUnavailable(f"socket path longer than {SUN_PATH_MAX} bytes: {files.sock}")
        for _ in range(2):  # a server that exits idle just as we connect closes us unserved: once more
            status = Client(connect_or_start(files)).hand_over(argv)
            if status is not None:
                return status
        raise WorkerUnavailable(f"the server closed the connection twice without taking the run; see {files.log}")
    except (WorkerUnavailable, OSError) as e:
        _warn(str(e))
        return None


def _connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    return sock


class _Locked:
    """flock on the key's lock file, polled until a deadline: one client starts the server."""

    def __init__(self, path: str, deadline: float):
        self.path, self.deadline = path, deadline

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() > self.deadline:
                    os.close(self.fd)
                    raise WorkerUnavailable(f"{self.path} stayed locked: another client is starting a "
                                            "server") from None
                time.sleep(0.02)

    def __exit__(self, *exc):
        os.close(self.fd)  # releases the lock


def connect_or_start(files: Files) -> socket.socket:
    """A connection to the live server of this key, starting one (under the lock) if none answers."""
    try:
        return _connect(files.sock)
    except (FileNotFoundError, ConnectionRefusedError):
        pass
    wait = float(os.environ.get(START_WAIT_ENV) or START_WAIT)
    deadline = time.monotonic() + wait
    with _Locked(files.lock, deadline):
        try:  # another client started it while we waited for the lock
            return _connect(files.sock)
        except (FileNotFoundError, ConnectionRefusedError):
            pass
        if os.path.exists(files.sock):  # a dead server's socket
            os.unlink(files.sock)
        proc = _start_server(files)
        while time.monotonic() < deadline:
            try:
                return _connect(files.sock)
            except (FileNotFoundError, ConnectionRefusedError):
                pass
            if proc.poll() is not None:
                raise WorkerUnavailable(f"the server exited with status {proc.returncode} at start; see {files.log}")
            time.sleep(0.02)
    raise WorkerUnavailable(f"the server did not start within {wait:.0f} s; see {files.log}")


def _start_server(files: Files):
    """The server, detached: its own session (a Ctrl-C or a job kill aimed at this job's process
    group does not reach it), stdio to its log, same interpreter flags and environment."""
    import subprocess

    idle = os.environ.get(IDLE_ENV) or str(IDLE_TIMEOUT)
    cmd = [sys.executable, *subprocess._args_from_interpreter_flags(), "-m", "harness.worker", "serve",
           "--socket", files.sock, "--idle-timeout", idle]
    with open(files.log, "ab") as log:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _request(argv: list[str], ignored: list[int]) -> dict:
    umask = os.umask(0)
    os.umask(umask)
    return {"argv": list(argv), "cwd": os.getcwd(), "env": dict(os.environ), "umask": umask,
            "affinity": sorted(os.sched_getaffinity(0)), "ignored": ignored}


def _stdio_fds() -> list[int]:
    """0, 1 and 2, with /dev/null standing in for a closed one."""
    fds = []
    for fd in range(3):
        try:
            os.fstat(fd)
            fds.append(fd)
        except OSError:
            fds.append(os.open(os.devnull, os.O_RDWR))
    return fds


class Client:
    """One hand-over: send the run, forward signals, wait for the child's exit status."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.ready = False  # the request is sent: signals may go on the wire
        self.pending: list[int] = []
        self.forwarded: set[int] = set()

    def hand_over(self, argv: list[str]) -> int | None:
        """The run's exit status; None when the server closed before taking it (nothing ran)."""
        # A signal this process ignores (SIGINT in a background job) stays ignored, by the run too.
        ignored = [int(s) for s in FORWARDED if signal.getsignal(s) == signal.SIG_IGN]
        previous = {s: signal.signal(s, self._on_signal) for s in FORWARDED if s not in ignored}
        try:
            payload = json.dumps(_request(argv, ignored)).encode()
            try:
                socket.send_fds(self.sock, [struct.pack("!I", len(payload))], _stdio_fds())
                self.sock.sendall(payload)
            except (BrokenPipeError, ConnectionResetError):
                return None
            self.ready = True
            for signum in self.pending:
                self._forward(signum)
            return self._wait()
        finally:
            self.sock.close()  # a child still running sees EOF and kills itself
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _on_signal(self, signum, frame):
        self.forwarded.add(signum)
        if self.ready:
            self._forward(signum)
        else:  # never write in the middle of the request
            self.pending.append(signum)

    def _forward(self, signum: int) -> None:
        try:
            self.sock.sendall(f"signal {signum}\n".encode())
        except OSError:
            pass

    def _wait(self) -> int | None:
        self.sock.settimeout(ACK_WAIT)
        buf, heard = b"", False
        while True:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return None  # no answer: a child, if any, sees EOF when we close and dies
            except OSError:  # reset: the same as EOF
                data = b""
            if not data:
                if not heard:  # nothing holds the connection open: no child is running the run
                    return None
                print("error: the run's worker process ended without an exit status (its server was killed?); "
                      "HARNESS_WORKER=0 reruns it in this process", file=sys.stderr)
                return 1
            if not heard:
                heard = True
                self.sock.settimeout(None)
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                kind, _, value = line.decode().partition(" ")
                if kind == "exit":
                    return int(value)
                if kind == "signal":
                    return self._died_of(int(value))

    def _died_of(self, signum: int) -> int:
        """Exit as the child did. A signal we forwarded kills us too (what Snakemake would have seen
        in process); any other (a segfault, the OOM killer) is reported, as a shell would: 128+N."""
        if signum in self.forwarded:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        why = " (the kernel's OOM killer, or a kill -9)" if signum == signal.SIGKILL else ""
        print(f"error: the run's worker process died of {name}{why}; HARNESS_WORKER=0 reruns it in this process",
              file=sys.stderr)
        return 128 + signum


# -- server -----------------------------------------------------------------------------------

def _log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} [{os.getpid()}] {message}", flush=True)


def _preimport() -> None:
    """Import only: no torch op, no torch.set_num_threads, no CUDA (none survives a fork)."""
    import gc
    import importlib

    for name in PREIMPORT:
        try:
            importlib.import_module(name)
        except ImportError:  # datasets is optional
            pass
    # What every run reads from the installed packages, read once here (the key covers them).
    for name in ("harness.plugins", "harness.provenance"):
        sys.modules[name].warm()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():  # a child could not use CUDA: never serve so
        raise RuntimeError("an import initialised CUDA in the worker server")
    gc.freeze()  # children do not copy-on-write these objects just to collect them


class Server:
    """Accepts requests on the socket, forks a child per run, reports each child's exit status."""

    def __init__(self, sock_path: str, idle_timeout: float):
        self.files = Files.of_socket(sock_path)
        self.idle_timeout = idle_timeout
        self.children: dict[int, socket.socket] = {}  # pid -> its client's connection
        self.stopping = False
        self.listener: socket.socket | None = None

    def serve(self) -> int:
        started_with = dict(os.environ)
        _preimport()
        # What the imports did to the environment (torch._dynamo sets TORCHINDUCTOR_CACHE_DIR): each
        # child applies it over its client's environment, as the same imports would in process.
        self.import_env = {k: os.environ.get(k) for k in started_with.keys() | os.environ.keys()
                           if started_with.get(k) != os.environ.get(k)}
        if server_key(started_with) != self.files.key:  # what it imported is not what its clients hashed
            _log("not serving: this server's key differs from its socket's name (other sys.path, interpreter "
                 "flags, environment or harness sources than the client that started it)")
            return 3
        self.listener, self.inode = self._listen()
        selector = self._selector()
        with open(self.files.pid, "w") as f:
            f.write(f"{os.getpid()}\n")
        _log(f"serving {self.files.sock} for {os.getcwd()} ({sys.executable}), idle timeout {self.idle_timeout:.0f} s")
        self._loop(selector)
        self._close_listener()
        _log("stopped" if self.stopping else f"idle for {self.idle_timeout:.0f} s: exiting")
        return 0

    def _selector(self):
        """One select over the listener and the signal wake-ups (SIGCHLD: a run ended; SIGTERM: stop)."""
        import selectors

        self.wake_r, self.wake_w = socket.socketpair()
        for s in (self.wake_r, self.wake_w):
            s.setblocking(False)
        signal.set_wakeup_fd(self.wake_w.fileno())
        signal.signal(signal.SIGCHLD, lambda *a: None)
        signal.signal(signal.SIGTERM, self._stop)
        for s in (signal.SIGINT, signal.SIGHUP):  # not the server's to act on: it has no terminal
            signal.signal(s, signal.SIG_IGN)
        selector = selectors.DefaultSelector()
        selector.register(self.listener, selectors.EVENT_READ, "accept")
        selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        return selector

    def _loop(self, selector) -> None:
        """Serve until stopped or idle, and until the last child has ended."""
        last = time.monotonic()
        while self.children or not (self.stopping or time.monotonic() - last > self.idle_timeout):
            for key, _ in selector.select(timeout=1.0):
                if key.data == "wake":
                    self._drain_wakeups()
                elif not self.stopping:
                    self._accept()
                    last = time.monotonic()
            if self._reap():
                last = time.monotonic()
            if self.stopping and self.listener is not None:
                selector.unregister(self.listener)
                self._close_listener()

    def _listen(self) -> tuple[socket.socket, int]:
        """Bound and listening before it appears under its name (rename): a client never connects
        to a half-made server."""
        tmp = self.files.sock[:-len(".sock")] + ".tmp"  # no longer (a socket path has 107 bytes); the
        if os.path.exists(tmp):  # starting client holds the lock: a .tmp left is a dead server's
            os.unlink(tmp)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(tmp)
        os.chmod(tmp, 0o600)
        listener.listen(128)
        os.rename(tmp, self.files.sock)
        return listener, os.stat(self.files.sock).st_ino

    def _close_listener(self) -> None:
        """Unlink our socket (not a newer server's) and pid file under the lock, so that no client
        starts a server meanwhile; one that connected just before gets EOF and retries."""
        if self.listener is None:
            return
        try:
            with _Locked(self.files.lock, time.monotonic() + START_WAIT):
                self._unlink_own_files()
        except WorkerUnavailable:  # a client holds the lock for long: leave without it
            self._unlink_own_files()
        self.listener.close()
        self.listener = None

    def _unlink_own_files(self) -> None:
        try:
            if os.stat(self.files.sock).st_ino == self.inode:
                os.unlink(self.files.sock)
            with open(self.files.pid) as f:
                if f.read().strip() == str(os.getpid()):
                    os.unlink(self.files.pid)
        except OSError:
            pass

    def _stop(self, *args) -> None:
        self.stopping = True

    def _drain_wakeups(self) -> None:
        try:
            while self.wake_r.recv(512):
                pass
        except BlockingIOError:
            pass

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            return
        try:
            conn.settimeout(10)  # a request is a few kB sent at once: never let one hang the server
            _check_peer(conn)
            request, fds = _recv_request(conn)
        except (OSError, ValueError) as e:
            _log(f"bad request: {e}")
            conn.close()
            return
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            inherited = [self.listener, self.wake_r, self.wake_w, *self.children.values()]
            _child(conn, request, fds, inherited, self.import_env)  # never returns
        for fd in fds:
            os.close(fd)
        self.children[pid] = conn
        _send_line(conn, f"started {pid}")
        _log(f"run {pid}: {' '.join(request['argv'][1:])}")

    def _reap(self) -> bool:
        """Report each finished child's status to its client; True if any finished."""
        reaped = False
        while self.children:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            conn = self.children.pop(pid, None)
            message = (f"exit {os.WEXITSTATUS(status)}" if os.WIFEXITED(status)
                       else f"signal {os.WTERMSIG(status)}")
            if conn is not None:  # a normal exit was already sent by the child: the client took the first
                _send_line(conn, message)
                conn.close()
            _log(f"end {pid}: {message} (cpu {usage.ru_utime + usage.ru_stime:.3f} s, "
                 f"peak rss {usage.ru_maxrss / 1024:.0f} MB)")
            reaped = True
        return reaped


def _send_line(conn: socket.socket, line: str) -> None:
    try:
        conn.sendall(f"{line}\n".encode())
    except OSError:  # the client is gone
        pass


def _check_peer(conn: socket.socket) -> None:
    _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    if uid != os.getuid():
        raise ValueError(f"client uid {uid} is not this server's")


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        data = conn.recv(n - len(buf))
        if not data:
            raise ValueError("client closed mid-request")
        buf += data
    return buf


def _recv_request(conn: socket.socket) -> tuple[dict, list[int]]:
    head, fds, _, _ = socket.recv_fds(conn, 4, 3, socket.MSG_CMSG_CLOEXEC)
    try:
        if len(fds) != 3:
            raise ValueError(f"expected stdin, stdout and stderr, got {len(fds)} file descriptors")
        head += _recv_exact(conn, 4 - len(head))  # a stream may split even 4 bytes
        (size,) = struct.unpack("!I", head)
        if size > 64 * 2**20:
            raise ValueError(f"request of {size} bytes")
        return json.loads(_recv_exact(conn, size)), fds
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


# -- the child: one run -----------------------------------------------------------------------

def _child(conn: socket.socket, request: dict, fds: list[int], inherited: list[socket.socket],
           import_env: dict) -> None:
    """Become the client's process, run ``harness.cli.main`` and exit; never returns."""
    code = 1
    try:
        _forget_server(inherited, request["ignored"])
        conn.settimeout(None)
        _adopt(request, fds, import_env)
        import threading

        finished = threading.Event()
        threading.Thread(target=_watch_client, args=(conn, finished), daemon=True).start()
        code = _run_cli(request["argv"])
        _finish(conn, finished, code)
    except BaseException:  # noqa: BLE001 - the setup itself failed: say so on the client's stderr
        try:
            import traceback

            traceback.print_exc()
            sys.stderr.flush()
        finally:
            os._exit(code or 1)


def _forget_server(inherited: list[socket.socket], ignored: list[int]) -> None:
    """The signal dispositions Python starts with (the client's ignored ones stay ignored)."""
    signal.set_wakeup_fd(-1)
    for s in inherited:
        s.close()  # another client waits for EOF on its own connection: hold none of theirs
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for s in FORWARDED:
        default = signal.default_int_handler if s == signal.SIGINT else signal.SIG_DFL  # KeyboardInterrupt
        signal.signal(s, signal.SIG_IGN if s in ignored else default)


def _adopt(request: dict, fds: list[int], import_env: dict) -> None:
    """The client's stdio, cwd, environment (with what the server's imports set), argv, umask, CPUs."""
    import importlib
    import tempfile

    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdin, sys.stdout, sys.stderr = (_text_stream(0, sys.stdin), _text_stream(1, sys.stdout),
                                         _text_stream(2, sys.stderr))
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.umask(request["umask"])
    for k, v in import_env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    sys.argv = list(request["argv"])  # sys.path is the server's: the client's (in the key) plus the imports'
    tempfile.tempdir = None  # recomputed from this environment's TMPDIR
    importlib.invalidate_caches()  # task modules written since the server listed their folder
    try:
        os.sched_setaffinity(0, request["affinity"])
    except OSError:
        pass


def _text_stream(fd: int, like):
    """A text stream on ``fd`` as Python makes one at start-up (line-buffered on a terminal, stderr
    always; unbuffered with -u), with the encoding the server's environment gave (part of its key)."""
    import io

    write = fd > 0
    unbuffered = write and getattr(like, "write_through", False)  # python -u / PYTHONUNBUFFERED
    raw = open(fd, "wb" if write else "rb", buffering=0 if unbuffered else -1, closefd=False)  # noqa: SIM115
    return io.TextIOWrapper(raw, encoding=like.encoding, errors=like.errors,
                            line_buffering=write and (fd == 2 or os.isatty(fd)), write_through=unbuffered)


def _watch_client(conn: socket.socket, finished) -> None:
    """Signals the client forwards; EOF (the client died) kills this run at once."""
    buf = b""
    while True:
        try:
            data = conn.recv(256)
        except OSError:
            data = b""
        if not data:
            if not finished.is_set():
                os.kill(os.getpid(), signal.SIGKILL)
            return
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            kind, _, value = line.decode().partition(" ")
            if kind == "signal":
                os.kill(os.getpid(), int(value))


def _run_cli(argv: list[str]) -> int:
    """``sys.exit(harness.cli.main())`` as ``python -m harness`` does it, returning the status."""
    import traceback

    from harness.cli import main

    try:
        return _status(main(argv[1:]))
    except SystemExit as e:
        return _status(e.code)
    except KeyboardInterrupt:  # Python's own exit: the traceback, then death by SIGINT
        traceback.print_exc()
        _finish_stdio()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        return 130
    except BaseException:  # noqa: BLE001 - an uncaught exception: traceback and status 1, as in process
        traceback.print_exc()
        return 1


def _status(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _finish_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def _finish(conn: socket.socket, finished, code: int) -> None:
    """What interpreter exit does (join non-daemon threads, atexit handlers, flush), then the status
    to the client, then _exit: the server's own state is never torn down in a child."""
    import atexit
    import threading

    finished.set()
    try:
        threading._shutdown()  # private, but what Py_FinalizeEx calls: waits for non-daemon threads
        atexit._run_exitfuncs()
    finally:
        _finish_stdio()
        _send_line(conn, f"exit {code}")
        os._exit(code)


# -- status and stop --------------------------------------------------------------------------

def _servers(folder: str) -> list[tuple[str, int | None, bool]]:
    """(pid file, pid, alive) of each server this user has in ``folder``."""
    out = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".pid"):
            continue
        path = os.path.join(folder, name)
        try:
            with open(path) as f:
                pid = int(f.read().strip())
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                alive = b"harness.worker" in f.read()
        except (OSError, ValueError):
            pid, alive = None, False
        out.append((path, pid, alive))
    return out


def cmd_status(folder: str) -> int:
    servers = [s for s in _servers(folder) if s[2]]
    for path, pid, _ in servers:
        cwd = os.readlink(f"/proc/{pid}/cwd") if os.path.exists(f"/proc/{pid}/cwd") else "?"
        print(f"pid {pid}  cwd {cwd}  log {path[:-4]}.log")
    print(f"{len(servers)} warm worker server(s) in {folder}")
    return 0


def cmd_stop(folder: str, wait: float = 30.0) -> int:
    """SIGTERM each server: it takes no new run, lets running ones finish, then exits."""
    servers = [s for s in _servers(folder) if s[2]]
    for _, pid, _ in servers:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and any(_alive(pid) for _, pid, _ in servers):
        time.sleep(0.05)
    left = [pid for _, pid, _ in servers if _alive(pid)]
    print(f"stopped {len(servers) - len(left)} server(s)" + (f"; still finishing runs: {left}" if left else ""))
    return 0


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m harness.worker", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="the server (started by the first client that finds none)")
    s.add_argument("--socket", required=True)
    s.add_argument("--idle-timeout", type=float, default=IDLE_TIMEOUT)
    sub.add_parser("status", help="this user's live servers")
    s = sub.add_parser("stop", help="stop this user's servers (running runs finish first)")
    s.add_argument("--wait", type=float, default=30.0, help="seconds to wait for them to exit")
    args = p.parse_args(argv)
    if args.command == "serve":
        return Server(args.socket, args.idle_timeout).serve()
    folder = socket_dir()
    return cmd_status(folder) if args.command == "status" else cmd_stop(folder, args.wait)


if __name__ == "__main__":
    sys.exit(main())
