-- Error groups: every 5xx counted under a fingerprint of its route
-- template, method, status, code and cause kind (never the error's
-- values), summed over every instance. created_at is when the first
-- writer inserted the row: the database, not an instance, decides that a
-- fingerprint is new (the new_error alert).
CREATE TABLE error_groups (
    fingerprint TEXT PRIMARY KEY,
    route TEXT NOT NULL,
    method TEXT NOT NULL,
    status BIGINT NOT NULL,
    code TEXT NOT NULL,
    cause TEXT NOT NULL,
    count BIGINT NOT NULL,
    first_seen BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    last_request_id TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX error_groups_last_seen ON error_groups (last_seen);
CREATE INDEX error_groups_created_at ON error_groups (created_at);

-- Which instances saw each group, so that a group lists all of them.
CREATE TABLE error_group_instances (
    fingerprint TEXT NOT NULL,
    instance TEXT NOT NULL,
    count BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    PRIMARY KEY (fingerprint, instance)
);
