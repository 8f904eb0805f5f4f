-- Which messages devices sent up were handled already, across every process sharing the
-- database: one row per message (device, outbox identity, sequence number), inserted by the
-- process that handles it first (INSERT ... ON CONFLICT DO NOTHING), deleted once expired
-- (past the outbox's resend window).
CREATE TABLE message_marks (
    device     text   NOT NULL,
    outbox     text   NOT NULL,
    id         bigint NOT NULL,
    expires_ms bigint NOT NULL,
    PRIMARY KEY (device, outbox, id)
);
CREATE INDEX message_marks_expiry ON message_marks (expires_ms);
