-- Messages sent up, handed by the broker to one process (a shared subscription) and passed
-- through here to every process's live streams: the process that marked a message first
-- inserts it and NOTIFYs; each process reads the rows after the last it read. Kept minutes.
CREATE TABLE up_messages (
    seq     bigserial PRIMARY KEY,
    device  text   NOT NULL,
    topic   text   NOT NULL,
    payload bytea  NOT NULL,
    ts_ms   bigint NOT NULL,
    id      bigint
);
CREATE INDEX up_messages_ts ON up_messages (ts_ms);
