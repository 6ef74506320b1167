-- The card designer: drafts, published versions, archiving, and publishing as a background job.

-- The design being edited (JSON), NULL when the draft is the published design. A template made
-- in the designer starts at version 0: nothing published, so no member gets it yet.
ALTER TABLE templates ADD COLUMN draft TEXT;
ALTER TABLE templates ADD COLUMN archived_at BIGINT;

-- The draft's complete image set (rendered files), present while a draft exists; publishing
-- makes it the template's image set.
CREATE TABLE template_draft_images (
    template_id TEXT NOT NULL REFERENCES templates(id),
    file_name   TEXT NOT NULL,
    bytes       BYTEA NOT NULL,
    PRIMARY KEY (template_id, file_name)
);

-- Every published version as it was, for history and restore.
CREATE TABLE template_versions (
    template_id  TEXT NOT NULL REFERENCES templates(id),
    version      BIGINT NOT NULL,
    design       TEXT NOT NULL,
    published_at BIGINT NOT NULL,
    -- The staff account or API key that published it, for the history.
    published_by TEXT,
    PRIMARY KEY (template_id, version)
);
CREATE TABLE template_version_images (
    template_id TEXT NOT NULL,
    version     BIGINT NOT NULL,
    file_name   TEXT NOT NULL,
    bytes       BYTEA NOT NULL,
    PRIMARY KEY (template_id, version, file_name)
);
INSERT INTO template_versions (template_id, version, design, published_at)
    SELECT id, version, design, updated_at FROM templates;
INSERT INTO template_version_images (template_id, version, file_name, bytes)
    SELECT i.template_id, t.version, i.file_name, i.bytes
    FROM template_images i JOIN templates t ON t.id = i.template_id;

-- Publishing a version to its holders: each step marks a batch of passes changed and queues
-- their pushes, past `after_serial` (the last serial done), so a restart resumes where it stopped.
CREATE TABLE publish_jobs (
    id          TEXT PRIMARY KEY,
    template_id TEXT NOT NULL REFERENCES templates(id),
    version     BIGINT NOT NULL,
    total       BIGINT NOT NULL,
    done        BIGINT NOT NULL DEFAULT 0,
    after_serial TEXT NOT NULL DEFAULT '',
    -- running, done, or superseded (a newer version's job covers the same holders)
    status      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE INDEX publish_jobs_status ON publish_jobs(status, created_at);
CREATE INDEX publish_jobs_template ON publish_jobs(template_id, created_at);
