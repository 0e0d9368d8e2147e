"""A local OTLP/HTTP receiver for the OpenTelemetry exporter's tests.

:class:`OtlpReceiver` is a real ``ThreadingHTTPServer`` on 127.0.0.1 (a free port) that accepts
``POST /v1/traces`` and ``POST /v1/metrics`` with protobuf bodies, decodes them with
``opentelemetry-proto`` (``ExportTraceServiceRequest``, ``ExportMetricsServiceRequest``) and
answers an empty success response, as an OpenTelemetry collector does.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tests.support.ports import free_port

__all__ = ["OtlpReceiver", "SpanRecord", "attributes", "free_port", "value"]


def value(any_value: AnyValue) -> Any:
    """An OTLP ``AnyValue`` as a Python value (arrays as lists)."""
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [value(v) for v in any_value.array_value.values]
    if kind is None:
        return None
    return getattr(any_value, kind)


def attributes(pairs: Any) -> dict[str, Any]:
    """OTLP ``KeyValue`` attributes as a dict."""
    kept: list[KeyValue] = list(pairs)
    return {pair.key: value(pair.value) for pair in kept}


@dataclass
class SpanRecord:
    """One received span with its resource and scope attributes."""

    resource: dict[str, Any]
    scope: str
    span: Any  # opentelemetry.proto.trace.v1.trace_pb2.Span

    @property
    def attributes(self) -> dict[str, Any]:
        return attributes(self.span.attributes)


class OtlpReceiver:
    """An OTLP/HTTP (protobuf) receiver on 127.0.0.1 recording the decoded requests."""

    def __init__(self) -> None:
        self.traces: list[ExportTraceServiceRequest] = []
        self.metrics: list[ExportMetricsServiceRequest] = []
        self.paths: list[str] = []
        self.content_types: list[str] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                answer: bytes
                if self.path == "/v1/traces":
                    traces = ExportTraceServiceRequest.FromString(body)
                    answer = ExportTraceServiceResponse().SerializeToString()
                    with receiver.lock:
                        receiver.traces.append(traces)
                elif self.path == "/v1/metrics":
                    metrics = ExportMetricsServiceRequest.FromString(body)
                    answer = ExportMetricsServiceResponse().SerializeToString()
                    with receiver.lock:
                        receiver.metrics.append(metrics)
                else:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                with receiver.lock:
                    receiver.paths.append(self.path)
                    receiver.content_types.append(self.headers.get("Content-Type", ""))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)

    def spans(self) -> list[SpanRecord]:
        """Every received span, in arrival order."""
        with self.lock:
            requests = list(self.traces)
        return [
            SpanRecord(attributes(rs.resource.attributes), ss.scope.name, span)
            for request in requests
            for rs in request.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]

    def metric_points(self) -> dict[str, list[tuple[dict[str, Any], Any]]]:
        """The data points of the LAST metrics request, by metric name: (attributes, point)."""
        with self.lock:
            if not self.metrics:
                return {}
            last = self.metrics[-1]
        points: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        for rm in last.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    kind = metric.WhichOneof("data")
                    data = getattr(metric, kind)
                    points.setdefault(metric.name, []).extend(
                        (attributes(point.attributes), point) for point in data.data_points
                    )
        return points

    def metric_units(self) -> dict[str, tuple[str, str]]:
        """Each metric of the last request: (its data kind, its unit)."""
        with self.lock:
            last = self.metrics[-1]
        return {
            metric.name: (metric.WhichOneof("data") or "", metric.unit)
            for rm in last.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
        }

    def wait_for(self, predicate: Callable[[OtlpReceiver], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.02)
        return predicate(self)
