-- A user's pending OAuth states are counted and pruned together at every
-- connect start (at most a few are kept): find them without a scan.
CREATE INDEX oauth_states_user ON oauth_states (user_id, created_at);
