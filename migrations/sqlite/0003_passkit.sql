-- Apple PassKit web service: devices that registered for updates, and which passes each holds.

CREATE TABLE devices (
    device_library_identifier TEXT PRIMARY KEY,
    push_token                TEXT NOT NULL,
    created_at                BIGINT NOT NULL,
    updated_at                BIGINT NOT NULL
);

CREATE TABLE registrations (
    device_library_identifier TEXT NOT NULL REFERENCES devices(device_library_identifier),
    serial_number             TEXT NOT NULL REFERENCES passes(serial_number),
    created_at                BIGINT NOT NULL,
    PRIMARY KEY (device_library_identifier, serial_number)
);
-- Push fan-out: every device holding a pass.
CREATE INDEX registrations_serial ON registrations(serial_number);

-- When Wallet last downloaded each pass ("pushed but never fetched" shows here).
ALTER TABLE passes ADD COLUMN last_fetched_at BIGINT;
