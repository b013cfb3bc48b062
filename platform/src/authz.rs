//! Roles and what they may do. The mapping is a table, consulted by every
//! service, so no handler hard-codes "is admin" checks.

use std::{fmt, str::FromStr};

use quill_proto::auth::v1 as pb;
use serde::{Deserialize, Serialize};

/// Ordered: `Viewer < Creator < Admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Creator,
    Admin,
}

/// Why a caller may not do what they asked; every service's domain error
/// holds one (`Forbidden(Denied)`) and answers PERMISSION_DENIED with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// Their role lacks the permission.
    #[error("missing permission {}", .0.as_str())]
    Missing(Permission),
    /// A rule beyond the role (ownership): the text says which.
    #[error("{0}")]
    Rule(&'static str),
}

/// PERMISSION_DENIED, naming the missing permission when it is one.
impl From<Denied> for tonic::Status {
    fn from(denied: Denied) -> Self {
        let metadata: &[(&str, &str)] = match denied {
            Denied::Missing(permission) => &[("permission", permission.as_str())],
            Denied::Rule(_) => &[],
        };
        crate::error_info::with_metadata(
            tonic::Code::PermissionDenied,
            crate::error_info::reason::PERMISSION_DENIED,
            metadata,
            denied.to_string(),
        )
    }
}

impl Role {
    /// `Ok` if this role has `permission`.
    pub fn require(self, permission: Permission) -> Result<(), Denied> {
        if self.can(permission) {
            Ok(())
        } else {
            Err(Denied::Missing(permission))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    ArticleCreate,
    ArticleModerate,
    CommentModerate,
    UserManage,
}

/// The permission table. A role is granted exactly what its row lists.
const GRANTS: &[(Role, &[Permission])] = &[
    (Role::Viewer, &[]),
    (Role::Creator, &[Permission::ArticleCreate]),
    (
        Role::Admin,
        &[
            Permission::ArticleCreate,
            Permission::ArticleModerate,
            Permission::CommentModerate,
            Permission::UserManage,
        ],
    ),
];

impl Role {
    pub fn can(self, permission: Permission) -> bool {
        GRANTS
            .iter()
            .any(|(role, grants)| *role == self && grants.contains(&permission))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Creator => "creator",
            Role::Admin => "admin",
        }
    }

    pub fn to_proto(self) -> pb::Role {
        match self {
            Role::Viewer => pb::Role::Viewer,
            Role::Creator => pb::Role::Creator,
            Role::Admin => pb::Role::Admin,
        }
    }

    pub fn from_proto(role: pb::Role) -> Option<Self> {
        match role {
            pb::Role::Viewer => Some(Role::Viewer),
            pb::Role::Creator => Some(Role::Creator),
            pb::Role::Admin => Some(Role::Admin),
            pb::Role::Unspecified => None,
        }
    }
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::ArticleCreate => "article:create",
            Permission::ArticleModerate => "article:moderate",
            Permission::CommentModerate => "comment:moderate",
            Permission::UserManage => "user:manage",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown role {0:?}; expected viewer, creator or admin")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "creator" => Ok(Role::Creator),
            "admin" => Ok(Role::Admin),
            other => Err(UnknownRole(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_grant_only_their_rows() {
        assert!(Role::Viewer < Role::Creator && Role::Creator < Role::Admin);
        assert!(!Role::Viewer.can(Permission::ArticleCreate));
        assert!(Role::Creator.can(Permission::ArticleCreate));
        assert!(!Role::Creator.can(Permission::ArticleModerate));
        assert!(!Role::Creator.can(Permission::UserManage));
        for p in [
            Permission::ArticleCreate,
            Permission::ArticleModerate,
            Permission::CommentModerate,
            Permission::UserManage,
        ] {
            assert!(Role::Admin.can(p), "admin lacks {}", p.as_str());
        }
    }

    #[test]
    fn role_names_round_trip() {
        for role in [Role::Viewer, Role::Creator, Role::Admin] {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!("root".parse::<Role>().is_err());
    }
}
