"""``examples/otel_events.py`` turns a real plugin's events into OpenTelemetry metrics and spans.

The OpenTelemetry SDK is a test dependency only (the ``test`` extra): the
library never imports it (checked here too). The SDK's in-memory reader and
exporter receive what the example records.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from plugin_client import LifetimePolicy, PluginClient, errors, flush_events

from plugin_factory import make_plugin

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "otel_events.py"


def _example() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("otel_events_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _points(reader: InMemoryMetricReader) -> Dict[str, List[Tuple[Dict[str, Any], Any]]]:
    """metric name -> [(attributes, value or (count, sum))]."""
    out: Dict[str, List[Tuple[Dict[str, Any], Any]]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", None)
                    if value is None:
                        value = (point.count, point.sum)  # type: ignore[union-attr]
                    out.setdefault(metric.name, []).append((dict(point.attributes or {}), value))
    return out


def test_events_become_metrics_and_spans(tmp_path: Path) -> None:
    reader = InMemoryMetricReader()
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel = _example().OTelEvents(MeterProvider(metric_readers=[reader]), tracer_provider)

    policy = LifetimePolicy(request_timeout=0.3, start_timeout=5.0, exit_wait=0.5, shutdown_grace=1.0)
    with PluginClient(make_plugin(tmp_path / "p"), policy=policy, on_event=otel, request_events=True) as client:
        client.get("value:a")
        client.get("value:b")
        with pytest.raises(errors.PluginError):
            client.get("missing")
        with pytest.raises(errors.RequestTimeout):
            client.get("hang")
        client.get("value:c")
    assert flush_events(5.0)
    otel.close()

    points = _points(reader)
    counts = {(a["event"], a.get("error")): v for a, v in points["plugin_client.events"]}
    assert counts == {
        ("spawned", None): 2, ("ready", None): 2, ("request", None): 3,
        ("request", "bad-reference"): 1, ("request", "timeout"): 1,
        ("timed_out", None): 1, ("killed", None): 1, ("stopped", None): 1,
    }
    durations = {a.get("error"): v for a, v in points["plugin_client.request.duration"]}
    assert durations[None][0] == 3 and durations["timeout"][0] == 1 and durations["timeout"][1] >= 0.3
    [(_, (starts, start_sum))] = points["plugin_client.start.duration"]
    assert starts == 2 and start_sum > 0

    spans = exporter.get_finished_spans()
    lives = [s for s in spans if s.name == "plugin process"]
    assert [(s.attributes or {}).get("end") for s in lives] == ["killed", "stopped"]
    killed, stopped = lives
    assert killed.status.status_code is StatusCode.ERROR and stopped.status.status_code is StatusCode.UNSET
    assert [e.name for e in killed.events] == ["timed_out"]
    assert (stopped.attributes or {})["exit.stage"] == "stdin-close"
    requests = [s for s in spans if s.name == "secret_source.get"]
    assert len(requests) == 5
    assert sorted(s.status.status_code.name for s in requests) == ["ERROR", "ERROR", "UNSET", "UNSET", "UNSET"]
    for span in spans:  # the times come from the events, not from when the callback ran
        assert span.start_time is not None and span.end_time is not None and span.start_time <= span.end_time
    assert len([s for s in spans if s.name == "plugin start"]) == 2


def test_the_example_runs_as_a_script() -> None:
    proc = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "a failed request: bad-reference" in proc.stdout
    assert "span: plugin process" in proc.stdout and "plugin_client.request.duration" in proc.stdout


def test_the_library_does_not_import_opentelemetry() -> None:
    code = (
        "import sys, plugin_client, plugin_client.client, plugin_client.aio, plugin_client.events\n"
        "sys.exit(1 if any(m.startswith('opentelemetry') for m in sys.modules) else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
