//! One provider's credentials and the compare-and-set rules, shared by every store in this crate.

use std::collections::BTreeMap;

use oauth_core::{Credential, CredentialId};

use crate::{StoreError, Version, Versioned};

/// One provider's credentials, plus the last version of each deleted credential (so a re-created
/// one continues from it).
#[derive(Clone, Default)]
pub(crate) struct Table {
    pub(crate) credentials: BTreeMap<CredentialId, Versioned<Credential>>,
    pub(crate) retired: BTreeMap<CredentialId, Version>,
}

impl Table {
    pub(crate) fn len(&self) -> usize {
        self.credentials.len()
    }

    pub(crate) fn all(&self) -> Vec<Versioned<Credential>> {
        self.credentials.values().cloned().collect()
    }

    pub(crate) fn get(&self, id: &CredentialId) -> Option<Versioned<Credential>> {
        self.credentials.get(id).cloned()
    }

    pub(crate) fn versions(&self) -> BTreeMap<CredentialId, Version> {
        self.credentials
            .iter()
            .map(|(id, c)| (id.clone(), c.version))
            .collect()
    }

    fn version_of(&self, id: &CredentialId) -> Option<Version> {
        self.credentials.get(id).map(|c| c.version)
    }

    /// Compare-and-set write; changes nothing on error.
    pub(crate) fn save(
        &mut self,
        provider: &str,
        credential: &Credential,
        expected: Option<Version>,
    ) -> Result<Version, StoreError> {
        let id = &credential.id;
        let actual = self.version_of(id);
        if actual != expected {
            return Err(StoreError::Conflict {
                provider: provider.to_owned(),
                id: id.clone(),
                expected,
                actual,
            });
        }
        let version = match expected {
            Some(v) => v.saturating_add(1),
            None => self.retired.remove(id).map_or(1, |v| v.saturating_add(1)),
        };
        self.credentials
            .insert(id.clone(), Versioned::new(credential.clone(), version));
        Ok(version)
    }

    /// Compare-and-delete; changes nothing on error.
    pub(crate) fn delete(
        &mut self,
        provider: &str,
        id: &CredentialId,
        expected: Option<Version>,
    ) -> Result<(), StoreError> {
        let Some(actual) = self.version_of(id) else {
            return Err(StoreError::NotFound {
                provider: provider.to_owned(),
                id: id.clone(),
            });
        };
        if expected.is_some_and(|e| e != actual) {
            return Err(StoreError::Conflict {
                provider: provider.to_owned(),
                id: id.clone(),
                expected,
                actual: Some(actual),
            });
        }
        self.credentials.remove(id);
        self.retired.insert(id.clone(), actual);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    fn cred(id: &str, token: &str) -> Credential {
        let now = Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .expect("date");
        Credential::new(id, token, now).expect("credential")
    }

    #[test]
    fn cas_rules() {
        let mut t = Table::default();
        assert_eq!(t.save("p", &cred("a", "t1"), None).ok(), Some(1));
        assert!(
            t.save("p", &cred("a", "t2"), None)
                .is_err_and(|e| e.is_conflict())
        );
        assert!(
            t.save("p", &cred("a", "t2"), Some(2))
                .is_err_and(|e| e.is_conflict())
        );
        assert_eq!(t.save("p", &cred("a", "t2"), Some(1)).ok(), Some(2));
        assert!(
            t.save("p", &cred("b", "t"), Some(1))
                .is_err_and(|e| e.is_conflict())
        );
        assert!(
            t.delete("p", &cred("a", "x").id, Some(1))
                .is_err_and(|e| e.is_conflict())
        );
        assert!(t.delete("p", &cred("a", "x").id, Some(2)).is_ok());
        assert!(matches!(
            t.delete("p", &cred("a", "x").id, None),
            Err(StoreError::NotFound { .. })
        ));
        // Re-created: continues after the deleted version.
        assert_eq!(t.save("p", &cred("a", "t3"), None).ok(), Some(3));
        assert!(t.retired.is_empty());
    }
}
