//! Push notifications that make installed cards fetch their new version.
//! `apns` is the Apple Push Notification service client; the outbox dispatcher comes next.

pub mod apns;
pub mod dispatcher;
#[cfg(feature = "test-support")]
pub mod standin;
