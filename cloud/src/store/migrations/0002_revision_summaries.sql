-- Each revision's summary (number, parent, time, provenance, rollback_of) in a column of its
-- own, so that listing the history reads no manifests. Filled from the bodies of the revisions
-- stored by version 1.
ALTER TABLE revisions ADD COLUMN summary jsonb;
UPDATE revisions
    SET summary = body - 'manifest' - 'bundles' - 'secrets' - 'signatures' - 'layers';
ALTER TABLE revisions ALTER COLUMN summary SET NOT NULL;
