"""Feed a plugin client's lifecycle events into OpenTelemetry metrics and spans.

plugin-client does not depend on OpenTelemetry; this example does
(``pip install opentelemetry-sdk``). :class:`OTelEvents` is an ``on_event``
callback: give it to a client (``PluginClient(..., on_event=OTelEvents(),
request_events=True)``) and every event becomes

* a count on the counter ``plugin_client.events`` (attributes ``plugin``,
  ``event``, and ``error`` for a failed request);
* for ``ready``, a sample of the histogram ``plugin_client.start.duration``
  (seconds from the spawn to the init answer) and a span ``plugin start``;
* for ``request`` (with ``request_events=True``), a sample of
  ``plugin_client.request.duration`` (attributes ``plugin``, ``method``,
  ``error``) and a span named after the method, its status an error if the
  request failed;
* for each process, a span ``plugin process`` from ``spawned`` to its end
  (``stopped``, ``reaped_idle``, ``crashed`` or ``killed``), with the exit as
  attributes, and the events in between (timeouts, interruptions) as span events.

Spans get their real start and end times from the events (``at`` and
``duration``), so it does not matter that the callback runs later, on the
events thread. Run it as a script to see it work on the bundled ``jsonfile``
plugin::

    python examples/otel_events.py
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Dict, Optional, Tuple

from opentelemetry import metrics, trace
from opentelemetry.trace import Span, Status, StatusCode

from plugin_client import EventKind, PluginEvent

__all__ = ("OTelEvents", "main")

_ENDS = (EventKind.STOPPED, EventKind.REAPED_IDLE, EventKind.CRASHED, EventKind.KILLED)


def _ns(event: PluginEvent, before: float = 0.0) -> int:
    """The event's time (minus ``before`` seconds) in nanoseconds since the epoch, as OpenTelemetry wants it."""
    return int((event.at.timestamp() - before) * 1e9)


class OTelEvents:
    """An ``on_event`` callback that records metrics and spans (see the module's docstring)."""

    def __init__(
        self,
        meter_provider: Optional[metrics.MeterProvider] = None,
        tracer_provider: Optional[trace.TracerProvider] = None,
    ) -> None:
        meter = (meter_provider or metrics.get_meter_provider()).get_meter("plugin_client")
        self.tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer("plugin_client")
        self.events = meter.create_counter(
            "plugin_client.events", unit="{event}", description="Lifecycle events of plugin processes"
        )
        self.starts = meter.create_histogram(
            "plugin_client.start.duration", unit="s", description="From a plugin's spawn to its init answer"
        )
        self.requests = meter.create_histogram(
            "plugin_client.request.duration", unit="s", description="From a request's write to its answer"
        )
        # (plugin, pid) -> the span of that process's life. Only the events
        # thread touches it, but a lock costs nothing here and keeps the class
        # safe to share with a host thread that calls close().
        self._lives: Dict[Tuple[str, int], Span] = {}
        self._lock = threading.Lock()

    def __call__(self, event: PluginEvent) -> None:
        kind = event.kind
        attrs: Dict[str, str] = {"plugin": event.plugin, "event": kind.value}
        if event.error is not None:
            attrs["error"] = event.error
        self.events.add(1, attrs)
        if kind is EventKind.REQUEST:
            self._request(event)
        elif kind is EventKind.SPAWNED and event.pid is not None:
            span = self.tracer.start_span(
                "plugin process", start_time=_ns(event), attributes={"plugin": event.plugin, "pid": event.pid}
            )
            with self._lock:
                self._lives[(event.plugin, event.pid)] = span
        elif kind is EventKind.READY and event.duration is not None:
            self.starts.record(event.duration, {"plugin": event.plugin})
            span = self.tracer.start_span(
                "plugin start", start_time=_ns(event, event.duration), attributes={"plugin": event.plugin}
            )
            span.end(end_time=_ns(event))
        elif kind in _ENDS and event.pid is not None:
            self._end_life(event)
        elif event.pid is not None:  # timed_out, interrupted: events of the process's span
            with self._lock:
                life = self._lives.get((event.plugin, event.pid))
            if life is not None:
                life.add_event(kind.value, {"detail": event.detail}, timestamp=_ns(event))

    def _request(self, event: PluginEvent) -> None:
        duration = event.duration or 0.0
        attrs = {"plugin": event.plugin, "method": event.detail}
        if event.error is not None:
            attrs["error"] = event.error
        self.requests.record(duration, attrs)
        span = self.tracer.start_span(event.detail, start_time=_ns(event, duration), attributes=attrs)
        if event.error is not None:
            span.set_status(Status(StatusCode.ERROR, event.error))
        span.end(end_time=_ns(event))

    def _end_life(self, event: PluginEvent) -> None:
        assert event.pid is not None
        with self._lock:
            span = self._lives.pop((event.plugin, event.pid), None)
        if span is None:  # its spawn happened before this callback was attached
            return
        span.set_attribute("end", event.kind.value)
        if event.exit is not None:
            span.set_attribute("exit.stage", event.exit.stage.value)
            if event.exit.returncode is not None:
                span.set_attribute("exit.returncode", event.exit.returncode)
        if event.kind in (EventKind.CRASHED, EventKind.KILLED):
            span.set_status(Status(StatusCode.ERROR, event.detail))
        span.end(end_time=_ns(event))

    def close(self) -> None:
        """End the spans of processes still running (call after ``flush_events()``)."""
        with self._lock:
            lives, self._lives = self._lives, {}
        for span in lives.values():
            span.end()


def main() -> int:
    """Run a few requests against the bundled ``jsonfile`` plugin and print what was recorded."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from plugin_client import PluginClient, PluginError, flush_events, load_plugin

    reader = InMemoryMetricReader()
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    otel = OTelEvents(MeterProvider(metric_readers=[reader]), tracer_provider)

    plugin = load_plugin(Path(__file__).parent / "plugins" / "devboy-source-jsonfile.toml")
    with PluginClient(plugin, on_event=otel, request_events=True) as client:
        client.get("demo/greeting")
        try:
            client.get("demo/no-such-secret")
        except PluginError as exc:
            print("a failed request:", exc.kind)
    flush_events()
    otel.close()

    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", None)
                    if value is None:
                        value = f"count={point.count} sum={point.sum:.4f}"  # type: ignore[attr-defined]
                    print(f"{metric.name} {dict(point.attributes or {})}: {value}")
    for span in spans.get_finished_spans():
        print("span:", span.name, dict(span.attributes or {}), span.status.status_code.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
