-- Web console sessions, shared by every process on the database (so a balancer need not be
-- sticky, and a restart keeps them). A row is keyed by the sha256 of the session cookie's value:
-- the value itself is never stored. The CSRF token is kept as it is (the page reads it back
-- after a reload; it is useless without the cookie). Expired rows are deleted when a session is
-- made; at most a fixed number are kept (the oldest end first).
CREATE TABLE console_sessions (
    id_hash    bytea  PRIMARY KEY,
    token_hash bytea  NOT NULL,
    csrf       text   NOT NULL,
    created_ms bigint NOT NULL,
    expires_ms bigint NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_ms);
CREATE INDEX console_sessions_token ON console_sessions (token_hash);
