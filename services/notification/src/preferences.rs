//! What each user wants delivered, per kind in the app and by mail, and a
//! master switch for mail. Nothing stored means on.

use std::collections::HashMap;

use uuid::Uuid;

use crate::{error::NotificationError, inbox::Inbox, repo::preferences as repo, rules::Kind};

/// A user's settings, one entry per kind in the order of [`Kind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preferences {
    pub email_enabled: bool,
    pub kinds: Vec<KindPreference>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindPreference {
    pub kind: Kind,
    pub in_app: bool,
    pub email: bool,
}

/// The settings to change; anything not named keeps its value.
#[derive(Debug)]
pub struct PreferencesUpdate {
    pub email_enabled: Option<bool>,
    pub kinds: Vec<KindChange>,
}

/// One kind's new setting as asked for; `kind` is `None` when the caller
/// named a kind this service does not know.
#[derive(Debug, Clone, Copy)]
pub struct KindChange {
    pub kind: Option<Kind>,
    pub in_app: bool,
    pub email: bool,
}

impl Inbox {
    pub async fn preferences(&self, user: Uuid) -> Result<Preferences, NotificationError> {
        let email_enabled = repo::email_enabled(&self.pool, user).await?.unwrap_or(true);
        let stored: HashMap<String, (bool, bool)> = repo::kind_preferences(&self.pool, user)
            .await?
            .into_iter()
            .map(|(kind, in_app, email)| (kind, (in_app, email)))
            .collect();
        Ok(Preferences {
            email_enabled,
            kinds: Kind::ALL
                .into_iter()
                .map(|kind| {
                    let (in_app, email) =
                        stored.get(kind.as_str()).copied().unwrap_or((true, true));
                    KindPreference {
                        kind,
                        in_app,
                        email,
                    }
                })
                .collect(),
        })
    }

    /// Applies `update` in one transaction and returns the settings now in
    /// force.
    pub async fn update_preferences(
        &self,
        user: Uuid,
        update: PreferencesUpdate,
    ) -> Result<Preferences, NotificationError> {
        let kinds = preference_changes(&update.kinds)?;
        let mut tx = self.pool.begin().await?;
        if let Some(enabled) = update.email_enabled {
            repo::set_email_enabled(&mut tx, user, enabled).await?;
        }
        for k in kinds {
            repo::set_kind_preference(&mut tx, user, k.kind, k.in_app, k.email).await?;
        }
        tx.commit().await?;
        self.preferences(user).await
    }
}

/// The kinds an update names, each at most once: one setting per kind is
/// all there is, so a longer list is a mistake (or an attempt to make the
/// transaction do unbounded work).
fn preference_changes(kinds: &[KindChange]) -> Result<Vec<KindPreference>, NotificationError> {
    if kinds.len() > Kind::ALL.len() {
        return Err(NotificationError::invalid(
            "kinds",
            format!("too many (maximum is {})", Kind::ALL.len()),
        ));
    }
    let mut changes: Vec<KindPreference> = Vec::with_capacity(kinds.len());
    for k in kinds {
        let kind = k
            .kind
            .ok_or_else(|| NotificationError::invalid("kinds", "has an unknown kind"))?;
        if changes.iter().any(|seen| seen.kind == kind) {
            return Err(NotificationError::invalid(
                "kinds",
                format!("names {} more than once", kind.as_str()),
            ));
        }
        changes.push(KindPreference {
            kind,
            in_app: k.in_app,
            email: k.email,
        });
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn off(kind: Option<Kind>) -> KindChange {
        KindChange {
            kind,
            in_app: false,
            email: false,
        }
    }

    fn refusal(kinds: &[KindChange]) -> String {
        match preference_changes(kinds) {
            Err(NotificationError::Invalid(violations)) => match violations.as_slice() {
                [("kinds", why)] => why.clone(),
                other => panic!("expected one invalid `kinds`, got {other:?}"),
            },
            other => panic!("expected an invalid `kinds`, got {other:?}"),
        }
    }

    #[test]
    fn each_known_kind_may_be_named_once() {
        let all: Vec<_> = Kind::ALL.into_iter().map(|k| off(Some(k))).collect();
        assert_eq!(preference_changes(&all).unwrap().len(), Kind::ALL.len());
        assert_eq!(
            refusal(&[off(Some(Kind::Comment)), off(Some(Kind::Comment))]),
            "names comment more than once"
        );
    }

    #[test]
    fn unknown_kinds_and_overlong_lists_are_refused() {
        assert_eq!(refusal(&[off(None)]), "has an unknown kind");
        let flood = vec![off(Some(Kind::Comment)); Kind::ALL.len() + 1];
        assert_eq!(refusal(&flood), "too many (maximum is 5)");
    }
}
