//! Who may call the control plane: the registered devices with their tokens, and the admin
//! tokens, held in memory under one lock.
//!
//! A device and its token change together: a request presenting a device's token either finds
//! the device registered or not at all, never one without the other. Changes go through
//! [`Registry::change`], which serialises them so that a change's store write and its memory
//! update are one step (two concurrent changes of the same device cannot leave memory disagreeing
//! with the store). Reads take the lock briefly and never wait for a store write.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::error::ApiError;
use crate::store::DeviceRecord;

/// Who presented a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Caller {
    /// An admin token.
    Admin,
    /// A device's token: the device's name.
    Device(String),
}

/// What the registry holds.
#[derive(Debug, Default)]
pub(crate) struct Entries {
    /// Registered devices by name.
    devices: HashMap<String, DeviceRecord>,
    /// Device names by their token's sha256.
    tokens: HashMap<[u8; 32], String>,
    /// sha256 of each admin token not revoked.
    admin: Vec<[u8; 32]>,
}

impl Entries {
    /// Adds (or replaces) a device and its token.
    pub(crate) fn insert_device(&mut self, record: DeviceRecord) {
        if let Some(old) = self.devices.remove(&record.name) {
            self.tokens.remove(&old.token_hash);
        }
        self.tokens.insert(record.token_hash, record.name.clone());
        self.devices.insert(record.name.clone(), record);
    }

    /// Removes a device and its token.
    pub(crate) fn remove_device(&mut self, name: &str) {
        if let Some(record) = self.devices.remove(name) {
            self.tokens.remove(&record.token_hash);
        }
    }

    /// Allows an admin token, by its sha256.
    pub(crate) fn add_admin(&mut self, hash: [u8; 32]) {
        self.admin.push(hash);
    }

    /// Refuses an admin token from now on.
    pub(crate) fn revoke_admin(&mut self, hash: &[u8; 32]) {
        self.admin.retain(|h| h != hash);
    }

    /// Allows exactly these admin tokens, by their sha256.
    pub(crate) fn set_admins(&mut self, hashes: Vec<[u8; 32]>) {
        self.admin = hashes;
    }

    /// Replaces every device.
    pub(crate) fn set_devices(&mut self, devices: Vec<DeviceRecord>) {
        self.devices.clear();
        self.tokens.clear();
        for d in devices {
            self.insert_device(d);
        }
    }
}

/// The registry of devices, their tokens and the admin tokens.
#[derive(Debug)]
pub(crate) struct Registry {
    entries: RwLock<Entries>,
    /// Held across a change's store write and its memory update.
    changing: tokio::sync::Mutex<()>,
}

impl Registry {
    /// A registry of `devices` and the admin token hashes `admin`.
    pub(crate) fn new(devices: Vec<DeviceRecord>, admin: Vec<[u8; 32]>) -> Self {
        let mut entries = Entries {
            admin,
            ..Entries::default()
        };
        for r in devices {
            entries.insert_device(r);
        }
        Self {
            entries: RwLock::new(entries),
            changing: tokio::sync::Mutex::new(()),
        }
    }

    /// Applies what `read` finds in the store, between two changes (so that it cannot undo a
    /// change of this process): after another process sharing the store changed devices or
    /// admin tokens. Blocking: call it from a thread of its own, not an async worker.
    pub(crate) fn reload<T, E>(
        &self,
        read: impl FnOnce() -> Result<T, E>,
        apply: impl FnOnce(&mut Entries, T),
    ) -> Result<(), E> {
        let _one_at_a_time = self.changing.blocking_lock();
        let found = read()?;
        apply(
            &mut self.entries.write().unwrap_or_else(PoisonError::into_inner),
            found,
        );
        Ok(())
    }

    fn read(&self) -> RwLockReadGuard<'_, Entries> {
        self.entries.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `store_write` (off the async threads), then, if it succeeded, `apply` on the entries:
    /// one change at a time, so memory follows the store in the store's order.
    pub(crate) async fn change<T>(
        &self,
        store_write: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
        apply: impl FnOnce(&mut Entries, &T),
    ) -> Result<T, ApiError>
    where
        T: Send + 'static,
    {
        let _one_at_a_time = self.changing.lock().await;
        let done = crate::error::blocking(store_write).await?;
        let mut entries: RwLockWriteGuard<'_, Entries> =
            self.entries.write().unwrap_or_else(PoisonError::into_inner);
        apply(&mut entries, &done);
        Ok(done)
    }

    /// Who holds the token whose sha256 is `presented`: every admin hash is compared, in
    /// constant time and without stopping early, before the device tokens are looked up.
    pub(crate) fn authenticate(&self, presented: &[u8; 32]) -> Option<Caller> {
        let entries = self.read();
        let is_admin = entries.admin.iter().fold(false, |found, h| {
            edgefn_os::secret::ct_eq(h, presented) | found
        });
        if is_admin {
            return Some(Caller::Admin);
        }
        entries
            .tokens
            .get(presented)
            .map(|name| Caller::Device(name.clone()))
    }

    /// Whether `presented` is the sha256 of registered device `name`'s token (constant time).
    pub(crate) fn device_token_matches(&self, name: &str, presented: &[u8; 32]) -> bool {
        self.read()
            .devices
            .get(name)
            .is_some_and(|r| edgefn_os::secret::ct_eq(&r.token_hash, presented))
    }

    /// Whether `name` is a registered device (it has a token).
    pub(crate) fn is_registered(&self, name: &str) -> bool {
        self.read().devices.contains_key(name)
    }

    /// How many devices are registered.
    pub(crate) fn device_count(&self) -> usize {
        self.read().devices.len()
    }

    /// The registered devices' names, unsorted.
    pub(crate) fn device_names(&self) -> Vec<String> {
        self.read().devices.keys().cloned().collect()
    }

    /// The registered devices' public records, sorted by name.
    pub(crate) fn device_infos(&self) -> Vec<edgefn_schema::api::DeviceInfo> {
        let mut list: Vec<_> = self
            .read()
            .devices
            .values()
            .map(DeviceRecord::info)
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// Each registered device's name and Mosquitto password hash.
    pub(crate) fn mqtt_users(&self) -> Vec<(String, String)> {
        let entries = self.read();
        let mut users = Vec::new();
        for r in entries.devices.values() {
            match &r.mqtt_hash {
                Some(h) => users.push((r.name.clone(), h.clone())),
                None => {
                    tracing::warn!(device = %r.name, "device registered before messages existed: it has no MQTT password hash; remove and add it again to give it MQTT access on Mosquitto")
                }
            }
        }
        users
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth;

    fn record(name: &str, token: &str) -> DeviceRecord {
        DeviceRecord {
            name: name.to_owned(),
            token_hash: auth::hash(token),
            registered_ms: 0,
            mqtt_hash: None,
        }
    }

    #[test]
    fn a_device_and_its_token_come_and_go_together() {
        let admin = auth::hash("admin-token-0123456789");
        let r = Registry::new(vec![record("gw-01", "t1")], vec![admin]);
        assert_eq!(r.authenticate(&admin), Some(Caller::Admin));
        assert_eq!(
            r.authenticate(&auth::hash("t1")),
            Some(Caller::Device("gw-01".into()))
        );
        r.entries.write().unwrap().remove_device("gw-01");
        assert_eq!(r.authenticate(&auth::hash("t1")), None);
        assert!(!r.is_registered("gw-01"));
        // Registering a name again replaces its token: the old one stops working.
        let mut e = r.entries.write().unwrap();
        e.insert_device(record("gw-02", "a"));
        e.insert_device(record("gw-02", "b"));
        drop(e);
        assert_eq!(r.authenticate(&auth::hash("a")), None);
        assert!(r.device_token_matches("gw-02", &auth::hash("b")));
        r.entries.write().unwrap().revoke_admin(&admin);
        assert_eq!(r.authenticate(&admin), None);
    }
}
