//! SQL, and nothing else: one module per table (`preferences` holds both
//! the master switch and the per-kind choices). Each function is one
//! statement, except where its doc says otherwise.

pub mod mail;
pub mod notifications;
pub mod preferences;
pub mod recipients;

/// `NOTIFY` channel announcing committed notifications, so every instance
/// can push them live: a line `"<user id> <notification id>"` each,
/// several to a payload (see `notifications::insert_all`).
pub const NOTIFICATIONS_CHANNEL: &str = "quill_notification_pages";
/// The channel of the releases that announced one notification per
/// payload. Still listened to, so that during a rollout this instance
/// pushes what consumers of the previous release store; those instances
/// read only this one, and never meet a payload of several lines.
pub const SINGLE_NOTIFICATIONS_CHANNEL: &str = "quill_notifications";
/// `NOTIFY` channel waking the mail senders when mail is queued.
pub const MAIL_CHANNEL: &str = "quill_mail";
