"""How `tfllm serve`'s REST side reads a request off a socket: a read deadline (no slow-loris client
holds a thread forever) and RFC 9112's rules on the headers that frame a body."""

import contextlib
import io
import logging
import select
import socket
import threading
import time

from tfllm.serving.server.cancellation import Cancellation
from tfllm.serving.server.errors import ServingError, invalid_argument

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT_BODY = b'{"error": "Request timeout: the request did not arrive in time"}'


class RequestTimeout(Exception):
    """A request's headers and body did not all arrive before the read deadline (answered 408).

    Deliberately not a `TimeoutError`: `http.server` swallows those without an answer.
    """


class DeadlineReader(io.RawIOBase):
    """The raw reader of a connection: waits up to `idle_seconds` for a request's first byte, then
    gives the whole request (headers and body) until `deadline`.

    Args:
        sock: the connection.
        idle_seconds: how long a keep-alive connection may wait for its next request.
    """

    def __init__(self, sock, idle_seconds):
        super().__init__()
        self.sock = sock
        self.idle_seconds = idle_seconds
        self.deadline = None  # time.monotonic() by which the request must have arrived; None while idle

    def readable(self):
        return True

    def readinto(self, buffer):
        if self.deadline is None:
            self.sock.settimeout(self.idle_seconds)
            return self.sock.recv_into(buffer)
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise RequestTimeout()
        self.sock.settimeout(remaining)
        try:
            return self.sock.recv_into(buffer)
        except socket.timeout as error:
            raise RequestTimeout() from error


def framing_problem(headers):
    """What makes a request's body framing ambiguous (RFC 9112 section 6.3), or None.

    Two different Content-Length values, one that is not a number, or Content-Length together with
    Transfer-Encoding could be read differently by a proxy in front: they are refused (400).
    """
    lengths = {value.strip() for header in headers.get_all("Content-Length") or [] for value in header.split(",")}
    encoding = headers.get("Transfer-Encoding")
    if len(lengths) > 1:
        return f"Conflicting Content-Length headers: {', '.join(sorted(lengths))}"
    if lengths and not next(iter(lengths)).isdigit():
        return f"Invalid Content-Length: {next(iter(lengths))!r}"
    if encoding is not None and lengths:
        return "A request may not have both Content-Length and Transfer-Encoding"
    if encoding is not None and encoding.strip().lower() != "chunked":
        return f"Unsupported Transfer-Encoding: {encoding!r} (only chunked)"
    return None


def client_gone(sock):
    """Whether the peer of a connection has closed it (an end of file is waiting; nothing is consumed)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):  # reset, or already closed here
        return True


class RequestReader:
    """The reading half of `tfllm serve`'s REST handler (mixed into its `BaseHTTPRequestHandler`):
    the read deadline, bodies (Content-Length or chunked) within `max_request_bytes`, and watching
    for a client that goes away. Expects `self.server.rest` (a `RestServer`) and `self._send_error`.
    """

    def setup(self):
        super().setup()
        self._reader = DeadlineReader(self.connection, self.timeout)
        self.rfile = io.BufferedReader(self._reader)

    def handle_one_request(self):
        """Waits for a request while idle, then gives it `read_seconds` to arrive whole (408 after)."""
        self._reader.deadline = None
        try:
            if not self.rfile.peek(1):
                self.close_connection = True
                return
        except OSError:  # idle too long, or the client went away
            self.close_connection = True
            return
        self._reader.deadline = time.monotonic() + self.server.rest.read_seconds()
        try:
            super().handle_one_request()
        except RequestTimeout:  # the headers did not arrive in time
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.wfile.write(b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
                                 b"Connection: close\r\nContent-Length: %d\r\n\r\n%s"
                                 % (len(REQUEST_TIMEOUT_BODY), REQUEST_TIMEOUT_BODY))

    @contextlib.contextmanager
    def _watching_client(self, interval=0.2):
        """A `Cancellation` cancelled when the client closes the connection while the block runs."""
        cancellation, done = Cancellation(), threading.Event()

        def watch():
            while not done.wait(interval):
                if client_gone(self.connection):
                    logger.info("REST client %s went away; stopping its request", self.address_string())
                    cancellation.cancel()
                    return

        watcher = threading.Thread(target=watch, name="rest-client-watch", daemon=True)
        watcher.start()
        try:
            yield cancellation
        finally:
            done.set()
            watcher.join()

    def handle_expect_100(self):
        # Refuse an oversized body before the client sends it.
        self._body_read, self._started = False, False
        if self._declared_length() > (self.server.rest.max_request_bytes or float("inf")):
            self._send_error(self._too_large(self._declared_length()), close=True)
            return False
        return super().handle_expect_100()

    def _declared_length(self):
        try:
            return max(0, int(self.headers.get("Content-Length", "0").split(",")[0]))
        except ValueError:
            return 0

    def _has_body(self):
        return self._declared_length() > 0 or "chunked" in self.headers.get("Transfer-Encoding", "").lower()

    def _too_large(self, size):
        return ServingError(
            "RESOURCE_EXHAUSTED",
            f"Request body of {size} bytes exceeds the maximum request size of {self.server.rest.max_request_bytes} bytes",
            http_status=413,
        )

    def _body(self):
        """The request body, refusing one over `max_request_bytes` without reading it all (413) and
        one that does not arrive within the read timeout (408)."""
        try:
            return self._read_body()
        except RequestTimeout as error:
            self.close_connection = True
            raise ServingError("DEADLINE_EXCEEDED", "Request timeout: the request body did not arrive in time",
                               http_status=408) from error
        finally:
            self._reader.deadline = None

    def _read_body(self):
        self._body_read = True
        limit = self.server.rest.max_request_bytes or float("inf")
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._chunked_body(limit)
        length = self._declared_length()
        if length > limit:
            self._discard(length)
            raise self._too_large(length)
        return self.rfile.read(length) if length else b""

    def _chunked_body(self, limit):
        chunks, size = [], 0
        while True:
            try:
                chunk = int(self.rfile.readline(1024).split(b";")[0].strip(), 16)
            except ValueError as error:
                self.close_connection = True
                raise invalid_argument("Malformed chunked request body") from error
            if chunk == 0:
                while self.rfile.readline(1024).strip():
                    pass  # trailers
                return b"".join(chunks)
            size += chunk
            if size > limit:
                self._discard(limit)
                raise self._too_large(size)
            chunks.append(self.rfile.read(chunk))
            self.rfile.readline(1024)

    def _discard(self, declared):
        """Reads and drops a bounded part of a refused body, so the client gets to read the 413."""
        self.close_connection = True
        budget = min(declared, 4 * (self.server.rest.max_request_bytes or 0), 16 << 20)
        self._reader.deadline = time.monotonic() + 1.0
        try:
            while budget > 0:
                data = self.rfile.read1(min(budget, 1 << 16))
                if not data:
                    break
                budget -= len(data)
        except (OSError, RequestTimeout):
            pass  # the client stopped sending or went away; the answer is what matters

