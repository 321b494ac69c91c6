"""The HTTP server: HTTP/1.1 keep-alive and pipelining over asyncio on an
inherited listening socket (or one of its own), TCP_NODELAY and one write per
batch of responses, pre-forked workers sharing the loaded model, the orphan
timeout, and a graceful stop on SIGTERM/SIGINT."""

import asyncio
import os
import signal
import socket
import struct
import time

from .errors import LoadError, log
from .protocol import dumps

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
IDLE_CONNECTION_TIMEOUT = 120.0  # longer than Go's default IdleConnTimeout (90 s)
SHUTDOWN_GRACE = 10.0


REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
           411: "Length Required", 413: "Payload Too Large", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
           505: "HTTP Version Not Supported"}

_HEAD_CACHE = {}
_pack_double = struct.Struct("d").pack_into
_unpack_double = struct.Struct("d").unpack_from


def response(status, body, close=False, extra=b""):
    key = (status, close, extra)
    head = _HEAD_CACHE.get(key)
    if head is None:
        head = ("HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n" % (status, REASONS.get(status, "Error"))
                ).encode() + extra + (b"Connection: close\r\n" if close else b"") + b"Content-Length: "
        _HEAD_CACHE[key] = head
    return b"".join((head, str(len(body)).encode(), b"\r\n\r\n", body))


def error(status, msg, close=False, extra=b""):
    return response(status, dumps({"error": msg}), close, extra)


class HTTPConnection(asyncio.Protocol):
    """One client connection: HTTP/1.1 keep-alive + pipelining, Content-Length
    or chunked request bodies, one transport.write per batch of responses."""

    __slots__ = ("server", "app", "transport", "buf", "head", "need", "chunked", "continued", "last_active",
                 "closing")

    def __init__(self, server):
        self.server = server
        self.app = server.app
        self.transport = None
        self.buf = b""
        self.head = None  # (method, path, keep_alive) of the request whose body is awaited
        self.need = 0
        self.chunked = False
        self.continued = False
        self.last_active = time.monotonic()
        self.closing = False

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.server.conns.add(self)

    def connection_lost(self, exc):
        self.server.conns.discard(self)
        self.server.conn_closed()

    def pause_writing(self):
        # The client pipelines faster than it reads responses: stop reading
        # requests until the write buffer drains.
        self.transport.pause_reading()

    def resume_writing(self):
        if not self.closing:
            self.transport.resume_reading()

    def idle(self):
        return not self.buf and self.head is None

    def data_received(self, data):
        if self.closing:
            return
        self.last_active = time.monotonic()
        if self.buf:
            self.buf += data  # a bytearray: appending is amortised O(1)
            data = self.buf
        out = []
        pos = 0
        n = len(data)
        close = False
        while pos < n or self.head is not None:
            if self.head is None:
                end = data.find(b"\r\n\r\n", pos)
                if end < 0:
                    if n - pos > MAX_HEADER_BYTES:
                        out.append(error(431, "request headers too large", close=True))
                        close = True
                        pos = n
                    break
                if end - pos > MAX_HEADER_BYTES:
                    out.append(error(431, "request headers too large", close=True))
                    close = True
                    break
                r = self._parse_head(data, pos, end)
                pos = end + 4
                if isinstance(r, bytes):  # error response; the stream is out of sync: close
                    out.append(r)
                    close = True
                    break
            if self.chunked:
                body, pos2 = self._dechunk(data, pos)
                if body is None:
                    if pos2 is not None:  # malformed
                        out.append(error(400, pos2, close=True))
                        close = True
                    elif not self.continued and self.head[3]:
                        self.continued = True
                        out.append(b"HTTP/1.1 100 Continue\r\n\r\n")
                    break
                pos = pos2
            else:
                if n - pos < self.need:
                    if not self.continued and self.head[3]:
                        self.continued = True
                        out.append(b"HTTP/1.1 100 Continue\r\n\r\n")
                    break
                body = data[pos:pos + self.need]
                pos += self.need
            method, path, keep, _ = self.head
            self.head = None
            self.continued = False
            if self.server.stopping:
                keep = False
            try:
                status, rbody, extra = self.app.handle(method, path, body)
            except Exception as e:  # noqa: BLE001 - answer, keep the connection and the log readable
                log("%s %s: %s: %s" % (method, path, type(e).__name__, str(e)[:200]))
                status, rbody, extra = 500, dumps({"error": "internal error: %s" % type(e).__name__}), b""
            out.append(response(status, rbody, not keep, extra))
            if not keep:
                close = True
                break
        if close or pos >= n:
            self.buf = b""
        elif pos > 0 or data is not self.buf:
            self.buf = bytearray(data[pos:])
        if out:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
        if close:
            self.closing = True
            self.buf = b""
            self.transport.close()
        elif self.server.stopping and self.idle():
            self.closing = True
            self.transport.close()

    def _parse_head(self, data, pos, end):
        """Parses the request line and headers; returns an error response or None."""
        head = data[pos:end]
        if head.startswith(b"\r\n"):  # tolerate stray CRLF between requests
            head = head.lstrip(b"\r\n")
            if not head:
                self.head = None
                return error(400, "empty request", close=True)
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            return error(400, "malformed request line", close=True)
        method, target, version = parts
        if version == b"HTTP/1.1":
            keep = True
        elif version == b"HTTP/1.0":
            keep = False
        else:
            return error(505, "only HTTP/1.1 and HTTP/1.0 are supported", close=True)
        length = 0
        chunked = False
        expect = False
        has_length = False
        for line in lines[1:]:
            k, sep, v = line.partition(b":")
            if not sep:
                return error(400, "malformed header line", close=True)
            k = k.lower()
            if k == b"content-length":
                try:
                    length = int(v)
                except ValueError:
                    return error(400, "bad Content-Length", close=True)
                if length < 0:
                    return error(400, "bad Content-Length", close=True)
                has_length = True
            elif k == b"connection":
                v = v.lower()
                if b"close" in v:
                    keep = False
                elif b"keep-alive" in v:
                    keep = True
            elif k == b"transfer-encoding":
                te = v.strip().lower()
                if te == b"chunked":
                    chunked = True
                elif te != b"identity":
                    return error(501, "unsupported Transfer-Encoding %s" % te.decode("latin-1"), close=True)
            elif k == b"expect":
                expect = v.strip().lower() == b"100-continue"
        if chunked and has_length:
            return error(400, "both Content-Length and Transfer-Encoding", close=True)
        if length > MAX_BODY_BYTES:
            return error(413, "request body larger than %d bytes" % MAX_BODY_BYTES, close=True)
        target = target.decode("latin-1")
        q = target.find("?")
        if q >= 0:
            target = target[:q]
        if target.startswith("http://") or target.startswith("https://"):  # absolute-form
            s = target.find("/", target.find("//") + 2)
            target = target[s:] if s >= 0 else "/"
        self.head = (method.decode("latin-1"), target, keep, expect and version == b"HTTP/1.1")
        self.need = length
        self.chunked = chunked
        return None

    def _dechunk(self, data, pos):
        """Returns (body, new_pos) when a complete chunked body is buffered,
        (None, None) when more data is needed, (None, message) when malformed."""
        parts = []
        total = 0
        n = len(data)
        while True:
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                return None, (None if n - pos < 1024 else "bad chunk header")
            size_s = data[pos:eol].split(b";", 1)[0].strip()
            try:
                size = int(size_s, 16)
            except ValueError:
                return None, "bad chunk size"
            total += size
            if total > MAX_BODY_BYTES:
                return None, "request body too large"
            pos = eol + 2
            if size == 0:
                # trailers, then an empty line
                while True:
                    eol = data.find(b"\r\n", pos)
                    if eol < 0:
                        return None, None
                    line = data[pos:eol]
                    pos = eol + 2
                    if not line:
                        self.chunked = False
                        return b"".join(parts), pos
            if n - pos < size + 2:
                return None, None
            parts.append(data[pos:pos + size])
            if data[pos + size:pos + size + 2] != b"\r\n":
                return None, "bad chunk terminator"
            pos += size + 2


class Server:
    """A worker's event loop: accepts on the shared listening socket and serves.

    With several workers on one socket, the kernel hands a new connection to
    whichever worker calls accept first, and asyncio's own accept loop takes
    every pending connection at once: long-lived keep-alive connections (the
    router keeps a few) then pile up on one worker. So in multi-worker mode
    each worker publishes how many connections it holds (shared memory, next
    to its last-request time), accepts one connection per wake-up, and leaves
    a pending connection to a less loaded worker for up to ACCEPT_DEFER
    seconds (it may be busy in a long predict)."""

    ACCEPT_DEFER = 0.01

    def __init__(self, sock, app, supervisor_pid=None, orphan_ppid=None, orphan_timeout=300.0, balance=None):
        self.sock = sock
        self.app = app
        self.conns = set()
        self.connecting = 0  # accepted, transport not made yet
        self.balance = balance  # worker mode: (shm, my offset, [other offsets])
        self.defer_since = None
        self.accepting = False
        self.stopping = False
        self.supervisor_pid = supervisor_pid  # worker mode: exit when the supervisor is gone
        self.orphan_ppid = orphan_ppid  # single-process mode: the parent at start
        self.orphan_timeout = orphan_timeout
        self.loop = None
        self.done = None
        self.ticks = 0
        self.deadline = 0.0

    def run(self):
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.done = self.loop.create_future()
        self.sock.setblocking(False)
        self._resume_accept()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.stop, "signal %s" % signal.Signals(sig).name)
        self.loop.call_later(1.0, self.tick)
        try:
            self.loop.run_until_complete(self.done)
        finally:
            self.loop.close()

    def _resume_accept(self):
        if not self.stopping and not self.accepting:
            self.accepting = True
            self.loop.add_reader(self.sock.fileno(), self._accept)

    def _pause_accept(self):
        if self.accepting:
            self.accepting = False
            self.loop.remove_reader(self.sock.fileno())

    def publish_load(self):
        if self.balance is not None:
            shm, off, _ = self.balance
            _pack_double(shm, off + 8, 1e9 if self.stopping else len(self.conns) + self.connecting)

    def _accept(self):
        if self.balance is not None:
            shm, off, others = self.balance
            mine = len(self.conns) + self.connecting
            if others and mine > min(_unpack_double(shm, o + 8)[0] for o in others):
                now = time.monotonic()
                if self.defer_since is None:
                    self.defer_since = now
                if now - self.defer_since < self.ACCEPT_DEFER:
                    self._pause_accept()
                    self.loop.call_later(0.001, self._resume_accept)
                    return
            self.defer_since = None
        for _ in range(1 if self.balance is not None else 64):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as e:  # EMFILE, ENFILE, ENOBUFS...: back off, keep serving
                log("accept: %s; pausing accepts for 1s" % e)
                self._pause_accept()
                self.loop.call_later(1.0, self._resume_accept)
                return
            conn.setblocking(False)
            try:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            self.connecting += 1
            self.publish_load()
            self.loop.create_task(self._connect(conn))

    async def _connect(self, conn):
        try:
            await self.loop.connect_accepted_socket(lambda: HTTPConnection(self), conn)
        except Exception as e:  # noqa: BLE001 - the client went away
            conn.close()
            if not isinstance(e, OSError):
                log("connection setup failed: %s: %s" % (type(e).__name__, e))
        finally:
            self.connecting -= 1
            self.publish_load()

    def tick(self):
        if self.done.done():
            return
        self.ticks += 1
        now = time.monotonic()
        if self.supervisor_pid is not None and os.getppid() != self.supervisor_pid:
            self.stop("supervisor exited")
        elif (self.orphan_ppid is not None and self.orphan_timeout > 0 and os.getppid() != self.orphan_ppid
              and now - self.app.last_request >= self.orphan_timeout):
            log("orphaned (parent %d gone) and no request for %.0fs: exiting" % (self.orphan_ppid,
                                                                               now - self.app.last_request))
            self.stop(None)
        if self.ticks % 10 == 0 and not self.stopping:
            for c in list(self.conns):  # idle keep-alive, or a stalled request
                if now - c.last_active > IDLE_CONNECTION_TIMEOUT:
                    c.closing = True
                    c.transport.close()
        if self.stopping:
            if (not self.conns and not self.connecting) or now >= self.deadline:
                for c in list(self.conns):
                    c.transport.abort()
                self.done.set_result(None)
                return
        self.loop.call_later(0.1 if self.stopping else 1.0, self.tick)

    def stop(self, why):
        if self.stopping:
            return
        if why:
            log("%s: stopping (finishing in-flight requests)" % why)
        self.stopping = True
        self.publish_load()
        self.deadline = time.monotonic() + SHUTDOWN_GRACE
        self._pause_accept()
        self.sock.close()  # this process's copy: new connections go to the backlog of other copies, if any
        for c in list(self.conns):
            if c.idle():
                c.closing = True
                c.transport.close()
        if not self.conns and not self.connecting:
            self.done.set_result(None)

    def conn_closed(self):
        self.publish_load()
        if self.stopping and not self.conns and not self.connecting and not self.done.done():
            self.done.set_result(None)


# --------------------------------------------------------------------------
# Process management


def supervise(sock, app, workers, orphan_timeout, ppid):
    """Pre-forks workers sharing the loaded model and listening socket; restarts
    crashed ones; on SIGTERM/SIGINT stops them gracefully."""
    import gc
    import mmap
    import struct
    me = os.getpid()
    # Per worker: last request time (monotonic), connections held.
    shm = mmap.mmap(-1, 16 * workers)
    for i in range(workers):
        struct.pack_into("dd", shm, 16 * i, time.monotonic(), 0.0)
    sigs = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}
    signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    gc.collect()
    gc.freeze()  # keep the model's pages shared (copy-on-write) between workers

    def spawn(slot):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, sigs)
                app.shm = shm
                app.shm_offset = 16 * slot
                struct.pack_into("d", shm, 16 * slot + 8, 0.0)
                others = [16 * i for i in range(workers) if i != slot]
                Server(sock, app, supervisor_pid=me, balance=(shm, 16 * slot, others)).run()
            except BaseException as e:  # noqa: BLE001
                if not isinstance(e, (KeyboardInterrupt, SystemExit)):
                    log("worker %d crashed: %s: %s" % (os.getpid(), type(e).__name__, e))
                    code = 1
            finally:
                os._exit(code)
        return pid

    children = {spawn(i): i for i in range(workers)}
    restarts = []
    stopping = False
    deadline = None
    pending = []  # slots waiting to be restarted
    while children or (pending and not stopping):
        info = signal.sigtimedwait(sigs, 1.0)
        if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT) and not stopping:
            log("signal %s: stopping %d workers" % (signal.Signals(info.si_signo).name, len(children)))
            stopping = True
            deadline = time.monotonic() + SHUTDOWN_GRACE + 2
            for pid in children:
                _kill(pid, signal.SIGTERM)
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                children.clear()
                break
            if pid == 0:
                break
            slot = children.pop(pid, None)
            if slot is None:
                continue
            struct.pack_into("d", shm, 16 * slot + 8, 1e9)  # nobody defers to a dead worker
            if not stopping:
                log("worker %d exited (%s); restarting it" % (pid, _status(status)))
                pending.append(slot)
        now = time.monotonic()
        if pending and not stopping:
            restarts = [t for t in restarts if now - t < 60]
            if len(restarts) < 10 * workers:
                while pending:
                    restarts.append(now)
                    slot = pending.pop()
                    children[spawn(slot)] = slot
        if stopping and children and now >= deadline:
            for pid in children:
                _kill(pid, signal.SIGKILL)
            deadline = now + 5
        if not stopping and orphan_timeout > 0 and os.getppid() != ppid:
            last = max(struct.unpack_from("d", shm, 16 * i)[0] for i in range(workers))
            if now - last >= orphan_timeout:
                log("orphaned (parent %d gone) and no request for %.0fs: exiting" % (ppid, now - last))
                stopping = True
                deadline = now + SHUTDOWN_GRACE + 2
                for pid in children:
                    _kill(pid, signal.SIGTERM)
    return 0


def _kill(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _status(status):
    if os.WIFSIGNALED(status):
        return "signal %d" % os.WTERMSIG(status)
    return "exit code %d" % os.WEXITSTATUS(status)


def listening_socket(a):
    if a.fd is not None:
        try:
            sock = socket.socket(fileno=a.fd)
        except OSError as e:
            raise LoadError("--fd %d is not a socket: %s" % (a.fd, e))
        try:
            if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                raise LoadError("--fd %d is not a listening socket" % a.fd)
        except OSError as e:
            raise LoadError("--fd %d: %s" % (a.fd, e))
    else:
        try:
            sock = socket.create_server((a.host, a.port), backlog=4096, reuse_port=False)
        except OSError as e:
            raise LoadError("cannot listen on %s:%d: %s" % (a.host, a.port, e))
    sock.setblocking(False)
    return sock
