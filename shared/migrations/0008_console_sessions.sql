-- Web console sign-ins (services/api/console): server-side sessions behind an HttpOnly
-- cookie. Only digests of the cookie and of the token signed in with are kept; every
-- request re-checks the token, so revoking it ends its sessions at once.
CREATE TABLE console_sessions (
    id_hash    bytea PRIMARY KEY,           -- SHA-256 of the cookie's random value
    org        text,                        -- NULL: the admin (every org)
    token_hash bytea,                       -- an org token's tokens.token_hash
    admin_hash bytea,                       -- the admin: SHA-256 of the admin token then
    csrf       text        NOT NULL,        -- the synchronizer token every form carries
    flash      bytea,                       -- a one-time notice (sealed), shown by the next page
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    CHECK ((org IS NULL) = (token_hash IS NULL) AND (org IS NULL) = (admin_hash IS NOT NULL))
);
CREATE INDEX console_sessions_expires ON console_sessions (expires_at);
CREATE INDEX console_sessions_token ON console_sessions (token_hash) WHERE token_hash IS NOT NULL;
