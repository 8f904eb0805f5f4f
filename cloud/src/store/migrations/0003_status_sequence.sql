-- Each report row gets a number from a sequence when written, so that every control-plane
-- process sharing the database reads the reports the others received since it last looked
-- (`WHERE seq > $last`), without comparing clocks.
CREATE SEQUENCE device_status_seq;
ALTER TABLE device_status ADD COLUMN seq bigint;
UPDATE device_status SET seq = nextval('device_status_seq');
ALTER TABLE device_status ALTER COLUMN seq SET NOT NULL;
ALTER TABLE device_status ALTER COLUMN seq SET DEFAULT nextval('device_status_seq');
CREATE INDEX device_status_by_seq ON device_status (seq);
