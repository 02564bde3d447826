// The hooks other parts of the service call (the HTTP API, the autoscaler, the allocator) show up
// in the process's Prometheus text under their labels, with no database watched.
import {
  METRICS_CONTENT_TYPE,
  metricsText,
  recordHttpRequest,
  recordPlacements,
  recordProvisioningRequest,
  schedulerMetricNames,
} from '../../activities/metrics';

/** The value of the sample written exactly `series` (name and labels as exposed), if present. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

test('an HTTP request is counted under its route and status, and its duration observed', async () => {
  recordHttpRequest('eu-west', 'POST /v1/jobs', 201, 0.004);
  recordHttpRequest('eu-west', 'POST /v1/jobs', 201, 0.02);
  recordHttpRequest('eu-west', 'POST /v1/jobs', 400, 0.001);
  const text = await metricsText();
  expect(sample(text, 'sched_http_requests_total{region="eu-west",route="POST /v1/jobs",status="201"}')).toBe(2);
  expect(sample(text, 'sched_http_requests_total{region="eu-west",route="POST /v1/jobs",status="400"}')).toBe(1);
  expect(sample(text, 'sched_http_request_duration_seconds_count{region="eu-west",route="POST /v1/jobs"}')).toBe(3);
  expect(sample(text, 'sched_http_request_duration_seconds_bucket{le="0.005",region="eu-west",route="POST /v1/jobs"}')).toBe(2);
});

test('a provisioning request is counted by type and direction', async () => {
  recordProvisioningRequest('us-east', 'H100', 'up', 3);
  recordProvisioningRequest('us-east', 'H100', 'down');
  const text = await metricsText();
  expect(sample(text, 'sched_provisioning_requests_total{region="us-east",accelerator_type="H100",direction="up"}')).toBe(3);
  expect(sample(text, 'sched_provisioning_requests_total{region="us-east",accelerator_type="H100",direction="down"}')).toBe(1);
});

test('placement latency is observed only for placements that carry it', async () => {
  recordPlacements('ap-south', [
    { tier: 'basic', acceleratorType: 'A100', waitedSeconds: 2 },
    { tier: 'basic', acceleratorType: 'A100' },
  ]);
  const text = await metricsText();
  expect(sample(text, 'sched_placements_total{region="ap-south",tier="basic",accelerator_type="A100"}')).toBe(2);
  expect(sample(text, 'sched_placement_latency_seconds_count{region="ap-south",tier="basic"}')).toBe(1);
  expect(sample(text, 'sched_placement_latency_seconds_sum{region="ap-south",tier="basic"}')).toBe(2);
});

test('the text is Prometheus exposition with the Node.js process metrics beside the scheduler metrics', async () => {
  expect(METRICS_CONTENT_TYPE).toMatch(/^text\/plain; version=0\.0\.4/);
  const text = await metricsText();
  expect(text).toMatch(/^process_resident_memory_bytes \d+/m);
  for (const name of schedulerMetricNames()) expect(text).toContain(`# TYPE ${name} `);
});
