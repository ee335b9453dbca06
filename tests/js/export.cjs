// Exports a few spans, metric points and log records through the OpenTelemetry JavaScript SDK's
// own OTLP exporters, configured as a user would: OTEL_EXPORTER_OTLP_ENDPOINT, _HEADERS and
// _COMPRESSION from the environment. PROTOCOL (http/json, http/protobuf, grpc) picks the
// exporter packages; RUN_ID names what is sent. Prints {"traces": {...}, ...}: each signal's
// export result code (0 = SUCCESS) and error.
"use strict";
const { resourceFromAttributes } = require("@opentelemetry/resources");
const { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } = require("@opentelemetry/sdk-trace-base");
const { MeterProvider, MetricReader } = require("@opentelemetry/sdk-metrics");
const { LoggerProvider, InMemoryLogRecordExporter, SimpleLogRecordProcessor } = require("@opentelemetry/sdk-logs");

const protocol = process.env.PROTOCOL || "http/protobuf";
const runId = process.env.RUN_ID || "js";
const packages = {
  "http/json": ["trace-otlp-http", "metrics-otlp-http", "logs-otlp-http"],
  "http/protobuf": ["trace-otlp-proto", "metrics-otlp-proto", "logs-otlp-proto"],
  "grpc": ["trace-otlp-grpc", "metrics-otlp-grpc", "logs-otlp-grpc"],
}[protocol];
const [traceExporterPkg, metricExporterPkg, logExporterPkg] = packages.map((name) => require(`@opentelemetry/exporter-${name}`));
const resource = resourceFromAttributes({ "service.name": `node-${runId}` });

function exportWith(exporter, items) {
  return new Promise((resolve) => {
    exporter.export(items, (result) => resolve({ code: result.code, error: result.error ? String(result.error) : null }));
  });
}

class CollectingReader extends MetricReader {
  async onForceFlush() {}
  async onShutdown() {}
}

async function main() {
  const results = {};
  // Traces: the SDK makes the spans; the OTLP exporter under test sends them.
  const spans = new InMemorySpanExporter();
  const tracerProvider = new BasicTracerProvider({ resource, spanProcessors: [new SimpleSpanProcessor(spans)] });
  const tracer = tracerProvider.getTracer("gateway-tests");
  for (let i = 0; i < 3; i++) {
    const span = tracer.startSpan(`${runId}-span-${i}`, { attributes: { i, "user.email": "js@example.com" } });
    span.end();
  }
  await tracerProvider.forceFlush();
  const traceExporter = new traceExporterPkg.OTLPTraceExporter();
  results.traces = await exportWith(traceExporter, spans.getFinishedSpans());
  await traceExporter.shutdown();

  // Metrics: one counter and one histogram.
  const reader = new CollectingReader();
  const meterProvider = new MeterProvider({ resource, readers: [reader] });
  const meter = meterProvider.getMeter("gateway-tests");
  meter.createCounter(`${runId}.requests`).add(5, { route: "/a" });
  meter.createHistogram(`${runId}.latency`).record(12.5, { route: "/a" });
  const { resourceMetrics } = await reader.collect();
  const metricExporter = new metricExporterPkg.OTLPMetricExporter();
  results.metrics = await exportWith(metricExporter, resourceMetrics);
  await metricExporter.shutdown();

  // Logs.
  const records = new InMemoryLogRecordExporter();
  const loggerProvider = new LoggerProvider({ resource, processors: [new SimpleLogRecordProcessor({ exporter: records })] });
  const logger = loggerProvider.getLogger("gateway-tests");
  for (let i = 0; i < 2; i++) {
    logger.emit({ body: `${runId}-log-${i}`, severityNumber: 9, severityText: "INFO", attributes: { i } });
  }
  await loggerProvider.forceFlush();  // the processor hands records on asynchronously
  const logExporter = new logExporterPkg.OTLPLogExporter();
  results.logs = await exportWith(logExporter, records.getFinishedLogRecords());
  await logExporter.shutdown();

  results.sent = { spans: spans.getFinishedSpans().length, logs: records.getFinishedLogRecords().length };
  process.stdout.write(JSON.stringify(results) + "\n");
}

main().catch((error) => {
  process.stderr.write(String(error && error.stack || error) + "\n");
  process.exit(1);
});
