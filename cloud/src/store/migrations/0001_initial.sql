-- The control plane's state (edgefn-cloud --store postgres://…), first version.
-- Times are milliseconds since the Unix epoch; hashes are sha256 (32 bytes).

-- Revisions, numbered from 1 without gaps; `body` is the whole revision (api::Revision).
CREATE TABLE revisions (
    number bigint PRIMARY KEY CHECK (number > 0),
    created_ms bigint NOT NULL,
    body jsonb NOT NULL
);

-- Bundles and dependency layers by sha256 digest, when no object store holds them.
CREATE TABLE bundles (
    digest text PRIMARY KEY,
    bytes bytea NOT NULL
);

-- Registered devices: the hash of each token, never the token.
CREATE TABLE devices (
    name text PRIMARY KEY,
    token_hash bytea NOT NULL CHECK (length(token_hash) = 32),
    registered_ms bigint NOT NULL,
    -- Mosquitto's `$7$` hash of the token, for an external Mosquitto's password file.
    mqtt_hash text
);

-- Each device's last status report (api::StatusReport).
CREATE TABLE device_status (
    name text PRIMARY KEY,
    report jsonb NOT NULL,
    at_ms bigint NOT NULL
);

-- Admin tokens by hash; a revoked one never authenticates again.
CREATE TABLE admin_tokens (
    hash bytea PRIMARY KEY CHECK (length(hash) = 32),
    name text NOT NULL,
    created_ms bigint NOT NULL,
    revoked_ms bigint
);

-- Secrets: the last version issued (never decreases, even once removed) ...
CREATE TABLE secrets (
    name text PRIMARY KEY,
    last_version bigint NOT NULL
);

-- ... and the versions kept, sealed with the secrets key (never in plain text).
CREATE TABLE secret_versions (
    name text NOT NULL REFERENCES secrets ON DELETE CASCADE,
    version bigint NOT NULL,
    created_ms bigint NOT NULL,
    sealed bytea NOT NULL,
    PRIMARY KEY (name, version)
);

-- Small facts: `secret_key_check`, `rollout` (the latest revision's rollout record, JSON).
CREATE TABLE meta (
    key text PRIMARY KEY,
    value bytea NOT NULL
);
