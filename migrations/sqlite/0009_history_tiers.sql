-- Monitoring history in tiers, so that a long range reads a few
-- aggregated rows instead of every minute and every sample.
--
-- Per-hour route rollups: the exact sums of the per-minute rows of an hour
-- (requests, errors, latency buckets), per instance and route, and the
-- latest minute they cover.
CREATE TABLE metric_rollups_hourly (
    hour BIGINT NOT NULL,
    instance TEXT NOT NULL,
    route TEXT NOT NULL,
    requests BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    buckets TEXT NOT NULL,
    last_minute BIGINT NOT NULL,
    PRIMARY KEY (hour, instance, route)
);

-- Health samples per 10 minutes, per component and instance: counts per
-- status (the worst status follows from them), and the sum and maximum of
-- the response times. Keyed by component first, so a trend of one
-- component reads its own rows.
CREATE TABLE health_rollups (
    component TEXT NOT NULL,
    bucket BIGINT NOT NULL,
    instance TEXT NOT NULL,
    samples BIGINT NOT NULL,
    healthy BIGINT NOT NULL,
    degraded BIGINT NOT NULL,
    unhealthy BIGINT NOT NULL,
    response_sum BIGINT NOT NULL,
    response_max BIGINT NOT NULL,
    PRIMARY KEY (component, bucket, instance)
);
CREATE INDEX health_rollups_bucket ON health_rollups (bucket);

-- How far each tier is complete: every per-minute row before `until` is
-- in metric_rollups_hourly ('rollups'), every sample before it in
-- health_rollups ('health'). Compaction advances it in the transaction
-- that writes the aggregated rows; a write below it adds to both tiers.
CREATE TABLE monitoring_tiers (
    name TEXT PRIMARY KEY,
    until BIGINT NOT NULL
);
INSERT INTO monitoring_tiers (name, until) VALUES ('rollups', 0), ('health', 0);
