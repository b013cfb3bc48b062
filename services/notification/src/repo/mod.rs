//! SQL, and nothing else: one module per table (`preferences` holds both
//! the master switch and the per-kind choices). Each function is one
//! statement, except where its doc says otherwise.

pub mod mail;
pub mod notifications;
pub mod preferences;
pub mod recipients;

/// `NOTIFY` channel announcing each committed notification, payload
/// `"<user id> <notification id>"`, so every instance can push it live.
pub const NOTIFICATIONS_CHANNEL: &str = "quill_notifications";
/// `NOTIFY` channel waking the mail senders when mail is queued.
pub const MAIL_CHANNEL: &str = "quill_mail";
