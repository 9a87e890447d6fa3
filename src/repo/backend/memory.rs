//! A store in memory, for fast tests of everything above the backend. Every
//! operation completes at once.

use std::collections::BTreeMap;
use std::future::ready;
use std::sync::Mutex;
use std::time::SystemTime;

use bytes::Bytes;

use super::{not_found, Fut, LeaseTag, Listed, Store, LEASE};
use crate::repo::error::{RepoError, Result};

#[derive(Default)]
pub(super) struct Memory {
    objects: Mutex<BTreeMap<String, Bytes>>,
    /// When each object was written.
    written: Mutex<BTreeMap<String, SystemTime>>,
}

impl Memory {
    fn get_range_now(&self, name: &str, offset: u64, len: u64) -> Result<Bytes> {
        let m = self.objects.lock().unwrap();
        let b = m.get(name).ok_or_else(|| not_found(name))?;
        let end = offset + len;
        if end > b.len() as u64 {
            return Err(RepoError::corrupt(
                "repo.read",
                name,
                "object is shorter than asked",
            ));
        }
        Ok(b.slice(offset as usize..end as usize))
    }

    /// Replaces the lease (removes it when `data` is None) if its current
    /// version is `expect` (None: there is none).
    fn swap_lease(&self, data: Option<Bytes>, expect: Option<&LeaseTag>) -> bool {
        let mut m = self.objects.lock().unwrap();
        let current = m.get(LEASE).map(|b| LeaseTag::of_content(b));
        if current.as_ref() != expect {
            return false;
        }
        match data {
            Some(data) => m.insert(LEASE.to_string(), data),
            None => m.remove(LEASE),
        };
        true
    }
}

impl Store for Memory {
    fn get<'a>(&'a self, name: &'a str) -> Fut<'a, Bytes> {
        let got = self.objects.lock().unwrap().get(name).cloned();
        Box::pin(ready(got.ok_or_else(|| not_found(name))))
    }

    fn get_range<'a>(&'a self, name: &'a str, offset: u64, len: u64) -> Fut<'a, Bytes> {
        Box::pin(ready(self.get_range_now(name, offset, len)))
    }

    fn put<'a>(&'a self, name: &'a str, data: Bytes) -> Fut<'a, ()> {
        self.objects.lock().unwrap().insert(name.to_string(), data);
        self.written
            .lock()
            .unwrap()
            .insert(name.to_string(), SystemTime::now());
        Box::pin(ready(Ok(())))
    }

    fn create<'a>(&'a self, name: &'a str, data: Bytes) -> Fut<'a, bool> {
        let mut m = self.objects.lock().unwrap();
        let absent = !m.contains_key(name);
        if absent {
            m.insert(name.to_string(), data);
            self.written
                .lock()
                .unwrap()
                .insert(name.to_string(), SystemTime::now());
        }
        Box::pin(ready(Ok(absent)))
    }

    fn delete<'a>(&'a self, name: &'a str) -> Fut<'a, ()> {
        self.objects.lock().unwrap().remove(name);
        self.written.lock().unwrap().remove(name);
        Box::pin(ready(Ok(())))
    }

    fn list<'a>(&'a self, folder: &'a str) -> Fut<'a, Vec<Listed>> {
        let p = format!("{folder}/");
        // Locked in the order `create` locks them: objects, then times.
        let objects = self.objects.lock().unwrap();
        let written = self.written.lock().unwrap();
        let listed = objects
            .iter()
            .filter(|(k, _)| k.starts_with(&p))
            .map(|(k, v)| Listed {
                name: k.clone(),
                size: v.len() as u64,
                modified: written.get(k).copied(),
            })
            .collect();
        Box::pin(ready(Ok(listed)))
    }

    fn write_lease<'a>(&'a self, data: Bytes, expect: Option<&'a LeaseTag>) -> Fut<'a, bool> {
        Box::pin(ready(Ok(self.swap_lease(Some(data), expect))))
    }

    fn delete_lease<'a>(&'a self, expect: &'a LeaseTag) -> Fut<'a, bool> {
        Box::pin(ready(Ok(self.swap_lease(None, Some(expect)))))
    }

    #[cfg(test)]
    fn tamper(&self, name: &str, offset: usize) {
        let mut m = self.objects.lock().unwrap();
        let mut v = m.get(name).unwrap().to_vec();
        v[offset] ^= 0x40;
        m.insert(name.to_string(), Bytes::from(v));
    }

    #[cfg(test)]
    fn age(&self, name: &str, by: std::time::Duration) {
        if let Some(t) = self.written.lock().unwrap().get_mut(name) {
            *t -= by;
        }
    }
}
