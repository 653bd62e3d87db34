-- One row per monitoring flush that committed. A flush whose answer was
-- lost (connection cut at COMMIT, flush budget passed) looks its batch up
-- here before writing the rows again, so rollup deltas are added once.
CREATE TABLE monitoring_batches (
    id TEXT PRIMARY KEY,
    instance TEXT NOT NULL,
    written_at BIGINT NOT NULL
);
CREATE INDEX monitoring_batches_written_at ON monitoring_batches (written_at);
