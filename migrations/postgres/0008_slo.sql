-- SLO events per time slot and instance: requests to non-probe routes,
-- those answered with 5xx (availability) and those slower than the latency
-- objective. Slots are narrower than the per-minute rollups so that the
-- burn-rate windows, shortened to seconds in tests, can be summed; each
-- instance adds its deltas to its own rows (the flush's batch id in
-- monitoring_batches keeps a retried flush from adding them twice). Rows
-- are pruned past the longest burn-rate window.
CREATE TABLE slo_slots (
    slot BIGINT NOT NULL,
    instance TEXT NOT NULL,
    requests BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    slow BIGINT NOT NULL,
    PRIMARY KEY (slot, instance)
);
