//! The events auth announces: every change to the user data other services
//! copy (content's authors, notification's addresses). Each is written to the
//! outbox in the transaction of the change; the relay publishes it later.

use quill_events::{enqueue, new_envelope};
use quill_proto::events::v1::{
    UserBanned, UserRegistered, UserSnapshot, UserUpdated, envelope::Payload,
};
use sqlx::PgConnection;

use crate::repo::users::UserRow;

/// The `producer` of auth's envelopes.
pub const PRODUCER: &str = "auth";

/// The user as other services may copy it: no role, no password hash.
pub fn snapshot(user: &UserRow) -> UserSnapshot {
    UserSnapshot {
        id: user.id.to_string(),
        username: user.username.clone(),
        email: user.email.clone(),
        bio: user.bio.clone(),
        image: user.image.clone(),
        banned: user.banned_at.is_some(),
        updated_at: Some(quill_platform::time::to_proto(user.updated_at)),
    }
}

pub fn registered(user: &UserRow) -> Payload {
    Payload::UserRegistered(UserRegistered {
        user: Some(snapshot(user)),
    })
}

pub fn updated(user: &UserRow) -> Payload {
    Payload::UserUpdated(UserUpdated {
        user: Some(snapshot(user)),
    })
}

/// A ban, or (`banned` false) its lifting.
pub fn banned(user: &UserRow) -> Payload {
    Payload::UserBanned(UserBanned {
        user: Some(snapshot(user)),
        banned: user.banned_at.is_some(),
    })
}

/// Writes `payload` to the outbox on `tx`, the transaction of the change.
pub async fn announce(tx: &mut PgConnection, payload: Payload) -> Result<(), sqlx::Error> {
    enqueue(tx, &new_envelope(PRODUCER, payload)).await
}
