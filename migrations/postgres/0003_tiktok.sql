-- OAuth flows in progress (state stored hashed, single use, expiring) and
-- the token columns of platform connections (sealed with a key id).
CREATE TABLE oauth_states (
    state_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    provider TEXT NOT NULL,
    code_verifier_enc TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX oauth_states_expires ON oauth_states (expires_at);

ALTER TABLE platform_connections ADD COLUMN external_id TEXT;
ALTER TABLE platform_connections ADD COLUMN display_name TEXT;
ALTER TABLE platform_connections ADD COLUMN avatar_url TEXT;
ALTER TABLE platform_connections ADD COLUMN scopes TEXT;
ALTER TABLE platform_connections ADD COLUMN access_token_enc TEXT;
ALTER TABLE platform_connections ADD COLUMN refresh_token_enc TEXT;
ALTER TABLE platform_connections ADD COLUMN key_id TEXT;
ALTER TABLE platform_connections ADD COLUMN expires_at BIGINT;
ALTER TABLE platform_connections ADD COLUMN refresh_expires_at BIGINT;
ALTER TABLE platform_connections ADD COLUMN last_error TEXT;
ALTER TABLE platform_connections ADD COLUMN refresh_lease_until BIGINT NOT NULL DEFAULT 0;
