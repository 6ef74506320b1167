//! The one integration test binary (one link step instead of one per file).

mod abuse;
mod api;
mod apns;
mod browser;
mod card_changes;
mod cli;
mod deploy;
mod designer;
mod enrollment;
mod google;
mod helpers;
mod ledger;
mod ledger_props;
mod lifecycle;
mod metrics;
mod openapi;
mod pass_checks;
mod passkit_cache;
mod push;
mod scale_out;
mod schemathesis;
mod smtp;
mod staff;
mod storage;
mod ui;
mod webservice;
