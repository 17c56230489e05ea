"""A record value with lazy LFS resolution: nothing is fetched until the payload is asked for."""

from __future__ import annotations

import threading

from lfs._envelope import Envelope
from lfs._errors import EnvelopeError, LfsError
from lfs._resolver import PayloadStream, Resolver, detect


class Record:
    """Wraps one Kafka record value (``confluent_kafka.Message.value()``, bytes or None).

    For plain data every method answers from the value itself. For an envelope:

    * :meth:`envelope`, :meth:`size` and :meth:`content_type` read the envelope only;
    * :meth:`value` fetches and verifies the payload once and caches it; a failed fetch raises
      and is *not* cached, so the next call tries again;
    * :meth:`value_stream` streams it without holding it whole (or streams the cached payload).

    A value that looks like an envelope but does not decode raises :class:`EnvelopeError` from
    every method except :meth:`raw` and :meth:`is_lfs`. Fetching needs a ``resolver``.
    Thread-safe.
    """

    def __init__(self, value: bytes | None, resolver: Resolver | None = None) -> None:
        self._raw = value
        self._resolver = resolver
        self._lock = threading.Lock()
        self._decoded = False
        self._envelope: Envelope | None = None
        self._decode_error: EnvelopeError | None = None
        self._payload: bytes | None = None

    def raw(self) -> bytes | None:
        """The record value as it was given (the envelope itself for an LFS record)."""
        return self._raw

    def envelope(self) -> Envelope | None:
        """The envelope, or None for plain data; decoded once."""
        with self._lock:
            if not self._decoded:
                try:
                    self._envelope = detect(self._raw)
                except EnvelopeError as exc:
                    self._decode_error = exc
                self._decoded = True
        if self._decode_error is not None:
            raise self._decode_error
        return self._envelope

    def is_lfs(self) -> bool:
        """True if the value is (or claims to be) an LFS envelope; never raises."""
        try:
            return self.envelope() is not None
        except EnvelopeError:
            return True

    def size(self) -> int:
        """The payload's length: the envelope's ``size`` (nothing fetched), else the value's length."""
        envelope = self.envelope()
        if envelope is not None:
            return envelope.size
        return len(self._raw) if self._raw is not None else 0

    def content_type(self) -> str | None:
        """The envelope's ``content_type``; None for plain data or when the envelope has none."""
        envelope = self.envelope()
        return envelope.content_type if envelope is not None else None

    def value(self) -> bytes | None:
        """The payload (fetched and verified once, then cached), or the plain value itself."""
        envelope = self.envelope()
        if envelope is None:
            return self._raw
        if self._payload is not None:
            return self._payload
        payload = self._require_resolver().fetch(envelope)  # raises; nothing is cached then
        with self._lock:
            if self._payload is None:
                self._payload = payload
            return self._payload

    def value_stream(self) -> PayloadStream:
        """A stream of the payload, verified as it is read (see :class:`PayloadStream`).

        Streams the cached payload if :meth:`value` already fetched it; a plain value (None reads
        as empty) streams from memory.
        """
        envelope = self.envelope()
        if envelope is None:
            return PayloadStream.of_bytes(self._raw or b"")
        if self._payload is not None:
            return PayloadStream.of_bytes(self._payload)
        return self._require_resolver().open(envelope)

    def _require_resolver(self) -> Resolver:
        if self._resolver is None:
            raise LfsError("fetch", "the record is an LFS envelope but no resolver was given to fetch it")
        return self._resolver

    def __repr__(self) -> str:
        try:
            envelope = self.envelope()
        except EnvelopeError:
            return "Record(invalid envelope)"
        if envelope is None:
            return f"Record(plain, {self.size()} bytes)"
        return f"Record(s3://{envelope.bucket}/{envelope.key}, {envelope.size} bytes)"
