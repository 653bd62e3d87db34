-- Monitoring history shared by every instance: per-minute route rollups
-- (latency as histogram buckets, so instances merge exactly), health
-- samples, alert history, and leases (one instance evaluates alerts).
CREATE TABLE metric_rollups (
    minute BIGINT NOT NULL,
    instance TEXT NOT NULL,
    route TEXT NOT NULL,
    requests BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    buckets TEXT NOT NULL,
    PRIMARY KEY (minute, instance, route)
);
CREATE INDEX metric_rollups_minute ON metric_rollups (minute);

CREATE TABLE health_samples (
    at BIGINT NOT NULL,
    instance TEXT NOT NULL,
    component TEXT NOT NULL,
    status TEXT NOT NULL,
    response_time_ms BIGINT NOT NULL,
    PRIMARY KEY (at, instance, component)
);
CREATE INDEX health_samples_component_at ON health_samples (component, at);

CREATE TABLE alerts (
    id TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    alert_key TEXT NOT NULL,
    severity TEXT NOT NULL,
    state TEXT NOT NULL,
    summary TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    fired_at BIGINT,
    resolved_at BIGINT,
    last_notified_at BIGINT,
    notifications BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX alerts_key_state ON alerts (alert_key, state);
CREATE INDEX alerts_started ON alerts (started_at);

CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
