-- The staff dashboard (issue 17): daily figures per program, kept by the `cockpit` job, and the
-- smallest recordings that make them exact.
--
-- `daily_figures`: one row per program and UTC day (`day` = the day's first millisecond). The
-- job recomputes today's and yesterday's rows (and any day in `cockpit_dirty`) from the raw
-- tables through the time indexes below; older rows are final. Cumulative figures (points
-- outstanding, cards installed now) are sums of the daily deltas. The `active_*`/`repeat_*`
-- columns are distinct-member counts over the 7, 30 and 90 days ending with the row's day
-- (NULL for days only back-filled); `tiers` is a JSON object tier id -> members, as of the
-- last computation.
CREATE TABLE daily_figures (
    program_id          TEXT NOT NULL REFERENCES programs(id),
    day                 BIGINT NOT NULL,
    issued              BIGINT NOT NULL DEFAULT 0,
    new_members         BIGINT NOT NULL DEFAULT 0,
    joins               BIGINT NOT NULL DEFAULT 0,
    join_views          BIGINT NOT NULL DEFAULT 0,
    apple_installs      BIGINT NOT NULL DEFAULT 0,
    apple_removals      BIGINT NOT NULL DEFAULT 0,
    google_installs     BIGINT NOT NULL DEFAULT 0,
    google_removals     BIGINT NOT NULL DEFAULT 0,
    first_installs      BIGINT NOT NULL DEFAULT 0,
    first_purchases     BIGINT NOT NULL DEFAULT 0,
    first_redemptions   BIGINT NOT NULL DEFAULT 0,
    purchases           BIGINT NOT NULL DEFAULT 0,
    earned              BIGINT NOT NULL DEFAULT 0,
    redeemed            BIGINT NOT NULL DEFAULT 0,
    expired             BIGINT NOT NULL DEFAULT 0,
    points_delta        BIGINT NOT NULL DEFAULT 0,
    pushes_sent         BIGINT NOT NULL DEFAULT 0,
    pushes_failed       BIGINT NOT NULL DEFAULT 0,
    fetched_after_push  BIGINT NOT NULL DEFAULT 0,
    active_7            BIGINT,
    active_30           BIGINT,
    active_90           BIGINT,
    repeat_7            BIGINT,
    repeat_30           BIGINT,
    repeat_90           BIGINT,
    tiers               TEXT,
    -- When the windows and tiers were computed (they cost a read of 90 days of purchases, so
    -- the job refreshes them every 15 minutes, and once more after the day ended).
    windows_at          BIGINT,
    computed_at         BIGINT NOT NULL,
    PRIMARY KEY (program_id, day)
);

-- Days to recompute besides today and yesterday (the back-fill of a program's history).
CREATE TABLE cockpit_dirty (
    program_id TEXT NOT NULL,
    day        BIGINT NOT NULL,
    PRIMARY KEY (program_id, day)
);

-- Counts with no row of their own elsewhere: join-page views, push outcomes, passes fetched
-- after a push. Incremented (UPSERT) per program, UTC day and name.
CREATE TABLE cockpit_counters (
    program_id TEXT NOT NULL,
    day        BIGINT NOT NULL,
    name       TEXT NOT NULL,
    n          BIGINT NOT NULL,
    PRIMARY KEY (program_id, day, name)
);

-- Apple registrations and unregistrations: a registration row is deleted when the device
-- unregisters (or APNs calls its token gone, or the card ended, or the member was erased), so
-- each is recorded here in its transaction. No device id is kept.
CREATE TABLE wallet_events (
    program_id    TEXT NOT NULL,
    member_id     TEXT NOT NULL,
    kind          TEXT NOT NULL,
    at            BIGINT NOT NULL
);
CREATE INDEX wallet_events_time ON wallet_events(at);
CREATE INDEX wallet_events_member ON wallet_events(member_id, at);

-- Time-first indexes for the job's per-day reads.
CREATE INDEX ledger_entries_time ON ledger_entries(created_at);
CREATE INDEX ledger_entries_purchases ON ledger_entries(member_id, created_at)
    WHERE kind = 'earn' AND amount_minor IS NOT NULL;
CREATE INDEX ledger_entries_redemptions ON ledger_entries(member_id, created_at)
    WHERE kind = 'redeem';
CREATE INDEX members_program_time ON members(program_id, created_at);
CREATE INDEX members_program_tier ON members(program_id, tier);
CREATE INDEX passes_time ON passes(created_at);
CREATE INDEX google_events_time ON google_events(received_at);
CREATE INDEX consents_time ON consents(recorded_at);
