//! Tag names this process has seen exist. Nothing deletes a tag, so a name
//! once known needs no `INSERT ... ON CONFLICT` again: publishing an
//! article with known tags is a single statement. The set is bounded; when
//! full it starts over, which only costs each name one insert more.

use std::{collections::HashSet, sync::Mutex};

/// The most names held; at about 50 bytes a name, a few hundred KiB.
const MAX_NAMES: usize = 4096;

#[derive(Default)]
pub struct KnownTags {
    names: Mutex<HashSet<String>>,
}

impl KnownTags {
    /// Of `names`, those not known to exist.
    pub fn unknown(&self, names: &[String]) -> Vec<String> {
        let known = self.lock();
        names
            .iter()
            .filter(|name| !known.contains(name.as_str()))
            .cloned()
            .collect()
    }

    /// `names` exist (they were just created or seen in the database).
    pub fn learn(&self, names: &[String]) {
        let mut known = self.lock();
        if known.len() + names.len() > MAX_NAMES {
            known.clear();
        }
        known.extend(names.iter().cloned());
    }

    /// A name believed known did not exist after all (a tag deleted by
    /// hand): believe nothing.
    pub fn forget_all(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // The set holds no invariant a panicking holder could break.
        self.names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn learned_names_are_known_until_forgotten() {
        let known = KnownTags::default();
        assert_eq!(known.unknown(&names(&["a", "b"])), names(&["a", "b"]));
        known.learn(&names(&["a"]));
        assert_eq!(known.unknown(&names(&["a", "b"])), names(&["b"]));
        known.forget_all();
        assert_eq!(known.unknown(&names(&["a"])), names(&["a"]));
    }

    #[test]
    fn a_full_set_starts_over() {
        let known = KnownTags::default();
        let many: Vec<String> = (0..MAX_NAMES).map(|i| i.to_string()).collect();
        known.learn(&many);
        assert!(known.unknown(&many).is_empty());
        known.learn(&names(&["new"]));
        assert!(known.unknown(&names(&["new"])).is_empty());
        assert_eq!(known.unknown(&names(&["0"])), names(&["0"]));
    }
}
