-- Google failures per row (issue 15): the HTTP status of a sync's last refusal (0: our configuration;
-- NULL after an outage, which backs off), so a change to a
-- member whose card Google refused (4xx) brings the row forward instead of waiting out the
-- retry delay; the pass version Google last got (the API's sync status); and messages Google
-- refused past their attempt limit, kept with the reason instead of retried forever.
ALTER TABLE google_pending ADD COLUMN last_status BIGINT;
ALTER TABLE google_objects ADD COLUMN synced_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE google_messages ADD COLUMN last_error TEXT;
ALTER TABLE google_messages ADD COLUMN failed_at BIGINT;

-- Which changes spend a card's notification budget, per program (no row: every balance change,
-- as before). 0/1 flags; `min_points` 0 means no change notifies for its size alone.
CREATE TABLE google_notify_policies (
    program_id    TEXT PRIMARY KEY REFERENCES programs(id),
    on_redemption BIGINT NOT NULL,
    on_tier       BIGINT NOT NULL,
    min_points    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
-- The tier Google last showed, so a tier change can notify.
ALTER TABLE google_objects ADD COLUMN synced_tier TEXT;
-- Cards Google already shows carry the member's tier, so the first sync after this migration
-- does not announce a tier change that never happened.
UPDATE google_objects SET synced_tier = (SELECT tier FROM members WHERE members.id = google_objects.member_id);
