//! Liveness and readiness, for load balancers and orchestrators.

use std::collections::BTreeMap;

use serde::Serialize;

/// `{"status": "ok"}`: the process answers.
#[derive(Serialize)]
pub struct Liveness {
    status: &'static str,
}

pub const ALIVE: Liveness = Liveness { status: "ok" };

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Check {
    Up,
    Down,
}

impl Check {
    pub fn up_if(up: bool) -> Self {
        if up { Self::Up } else { Self::Down }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
enum Status {
    #[serde(rename = "ready")]
    Ready,
    #[serde(rename = "not ready")]
    NotReady,
}

/// Each backend's check by name; ready when every one is up.
#[derive(Serialize)]
pub struct Readiness {
    checks: BTreeMap<&'static str, Check>,
    status: Status,
}

impl Readiness {
    pub fn new(checks: BTreeMap<&'static str, Check>) -> Self {
        let status = if checks.values().all(|c| *c == Check::Up) {
            Status::Ready
        } else {
            Status::NotReady
        };
        Self { checks, status }
    }

    pub fn is_ready(&self) -> bool {
        self.status == Status::Ready
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::bodies::testing::assert_sent_as;

    #[test]
    fn alive_is_ok() {
        assert_sent_as(&ALIVE, &json!({ "status": "ok" }));
    }

    #[test]
    fn one_check_down_is_not_ready() {
        let all_up = Readiness::new(BTreeMap::from([("auth", Check::Up), ("redis", Check::Up)]));
        assert!(all_up.is_ready());
        assert_sent_as(
            &all_up,
            &json!({ "status": "ready", "checks": { "auth": "up", "redis": "up" } }),
        );
        let one_down = Readiness::new(BTreeMap::from([
            ("auth", Check::Up),
            ("redis", Check::up_if(false)),
        ]));
        assert!(!one_down.is_ready());
        assert_sent_as(
            &one_down,
            &json!({ "status": "not ready", "checks": { "auth": "up", "redis": "down" } }),
        );
    }
}
