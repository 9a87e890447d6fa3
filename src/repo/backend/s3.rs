//! A store under an S3 bucket prefix: conditional writes (`If-None-Match`,
//! `If-Match`) for the lease, data packs in the repository's storage class,
//! and archived packs (GLACIER, DEEP_ARCHIVE, Intelligent-Tiering archive
//! tiers) restored before they are read.

use std::sync::OnceLock;

use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use bytes::Bytes;

use super::{not_found, Fut, LeaseTag, Listed, Store, LEASE};
use crate::cloud::AwsError;
use crate::repo::buf::AlignedBuf;
use crate::repo::error::{RepoError, Result};

pub(super) struct S3 {
    client: aws_sdk_s3::Client,
    /// The endpoint requests go to, when not the SDK's own (named in errors).
    via: Option<String>,
    bucket: String,
    prefix: String,
    /// Storage class of data packs, from the repository's config.
    data_class: OnceLock<String>,
}

/// What a write requires of the object already there.
enum Condition {
    None,
    Absent,
    Matches(String),
}

/// A failed S3 call, sorted by what callers decide on.
enum S3Error {
    /// No such object (for a conditional write: it vanished).
    Missing(AwsError),
    /// The object is not in the state a conditional request required.
    ConditionFailed(AwsError),
    Other(AwsError),
}

/// The one mapping of S3 SDK failures for the repository.
fn s3_error<E>(op: &'static str, e: SdkError<E, Response>, via: Option<&str>) -> S3Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let mut e = AwsError::from_sdk(op, e);
    if let Some(via) = via {
        e.message = format!("{} (through the S3 endpoint {via})", e.message);
    }
    if e.code_is("NoSuchKey") || e.status == Some(404) {
        S3Error::Missing(e)
    } else if e.code_is("PreconditionFailed") || e.code_is("ConditionalRequestConflict") {
        S3Error::ConditionFailed(e)
    } else {
        S3Error::Other(e)
    }
}

impl S3Error {
    fn aws(&self) -> &AwsError {
        match self {
            S3Error::Missing(e) | S3Error::ConditionFailed(e) | S3Error::Other(e) => e,
        }
    }
}

impl From<S3Error> for RepoError {
    fn from(e: S3Error) -> RepoError {
        match e {
            S3Error::Missing(e) | S3Error::ConditionFailed(e) | S3Error::Other(e) => e.into(),
        }
    }
}

/// A conditional write's answer: false when its condition did not hold,
/// or the object it was made on has gone.
fn conditional<T, E>(
    op: &'static str,
    sent: std::result::Result<T, SdkError<E, Response>>,
    via: Option<&str>,
) -> Result<bool>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match sent.map_err(|e| s3_error(op, e, via)) {
        Ok(_) => Ok(true),
        Err(S3Error::Missing(_) | S3Error::ConditionFailed(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The whole body of a GetObject answer.
async fn collect(body: ByteStream, name: &str) -> Result<Bytes> {
    body.collect().await.map(|b| b.into_bytes()).map_err(|e| {
        RepoError::Aws(AwsError {
            op: "s3:GetObject",
            code: None,
            message: format!("reading the body of {name}: {e}"),
            retryable: true,
            status: None,
        })
    })
}

impl Store for S3 {
    fn get<'a>(&'a self, name: &'a str) -> Fut<'a, Bytes> {
        Box::pin(self.get_object(name, None))
    }

    fn get_range<'a>(&'a self, name: &'a str, offset: u64, len: u64) -> Fut<'a, Bytes> {
        Box::pin(async move {
            let b = self.get_object(name, Some((offset, len))).await?;
            if b.len() as u64 != len {
                return Err(RepoError::corrupt(
                    "repo.read",
                    name,
                    format!("asked for {len} bytes at {offset}, got {}", b.len()),
                ));
            }
            Ok(b)
        })
    }

    fn put<'a>(&'a self, name: &'a str, data: Bytes) -> Fut<'a, ()> {
        Box::pin(async move {
            self.put_object(name, data, Condition::None, true)
                .await
                .map(|_| ())
        })
    }

    fn put_pack<'a>(&'a self, name: &'a str, data: AlignedBuf, archive: bool) -> Fut<'a, ()> {
        Box::pin(async move {
            self.put_object(name, data.into_bytes(), Condition::None, archive)
                .await
                .map(|_| ())
        })
    }

    fn create<'a>(&'a self, name: &'a str, data: Bytes) -> Fut<'a, bool> {
        Box::pin(self.put_object(name, data, Condition::Absent, true))
    }

    fn delete<'a>(&'a self, name: &'a str) -> Fut<'a, ()> {
        Box::pin(async move {
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(self.key(name))
                .send()
                .await
                .map_err(|e| s3_error("s3:DeleteObject", e, self.via.as_deref()))?;
            Ok(())
        })
    }

    fn list<'a>(&'a self, folder: &'a str) -> Fut<'a, Vec<Listed>> {
        Box::pin(async move {
            let mut out = Vec::new();
            let mut pages = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(format!("{}/", self.key(folder)))
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page =
                    page.map_err(|e| s3_error("s3:ListObjectsV2", e, self.via.as_deref()))?;
                for o in page.contents() {
                    if let Some(k) = o.key() {
                        out.push(Listed {
                            name: self.rel(k).to_string(),
                            size: o.size().unwrap_or(0).max(0) as u64,
                            modified: o.last_modified().and_then(|t| {
                                u64::try_from(t.secs()).ok().map(|s| {
                                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(s)
                                })
                            }),
                        });
                    }
                }
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
    }

    fn read_lease(&self) -> Fut<'_, Option<(Bytes, LeaseTag)>> {
        Box::pin(async move {
            let sent = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(self.key(LEASE))
                .send()
                .await;
            let out = match sent.map_err(|e| s3_error("s3:GetObject", e, self.via.as_deref())) {
                Ok(o) => o,
                Err(S3Error::Missing(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let etag = out.e_tag().unwrap_or_default().to_string();
            Ok(Some((collect(out.body, LEASE).await?, LeaseTag(etag))))
        })
    }

    fn write_lease<'a>(&'a self, data: Bytes, expect: Option<&'a LeaseTag>) -> Fut<'a, bool> {
        let cond = match expect {
            None => Condition::Absent,
            Some(t) => Condition::Matches(t.0.clone()),
        };
        Box::pin(self.put_object(LEASE, data, cond, true))
    }

    fn delete_lease<'a>(&'a self, expect: &'a LeaseTag) -> Fut<'a, bool> {
        Box::pin(async move {
            let sent = self
                .client
                .delete_object()
                .bucket(&self.bucket)
                .key(self.key(LEASE))
                .if_match(&expect.0)
                .send()
                .await;
            conditional("s3:DeleteObject", sent, self.via.as_deref())
        })
    }

    /// Restore requests for all archived objects first, then one wait.
    /// Objects already readable cost a HEAD each.
    fn thaw<'a>(&'a self, names: &'a [String]) -> Fut<'a, ()> {
        use futures::stream::{StreamExt, TryStreamExt};
        Box::pin(async move {
            if names.is_empty() {
                return Ok(());
            }
            let waiting: Vec<String> =
                futures::stream::iter(names.iter().cloned())
                    .map(|n| async move {
                        Ok::<_, RepoError>(self.request_restore(&n).await?.then_some(n))
                    })
                    .buffer_unordered(16)
                    .try_filter_map(|n| async move { Ok(n) })
                    .try_collect()
                    .await?;
            if waiting.is_empty() {
                return Ok(());
            }
            tracing::info!(
                "s3://{}: restoring {} pack(s) from the archive tier before reading",
                self.bucket,
                waiting.len()
            );
            for n in &waiting {
                self.wait_restored(n).await?;
            }
            Ok(())
        })
    }

    fn set_data_storage_class(&self, class: &str) {
        let _ = self.data_class.set(class.to_string());
    }

    fn is_s3(&self) -> bool {
        true
    }
}

impl S3 {
    pub(super) fn new(client: super::S3Client, bucket: String, prefix: String) -> S3 {
        S3 {
            client: client.client,
            via: client.via,
            bucket,
            prefix,
            data_class: OnceLock::new(),
        }
    }

    fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    fn rel<'a>(&self, key: &'a str) -> &'a str {
        if self.prefix.is_empty() {
            key
        } else {
            key.strip_prefix(&self.prefix)
                .map(|k| k.trim_start_matches('/'))
                .unwrap_or(key)
        }
    }

    /// An object, or `len` bytes of it at `offset`; an archived one is
    /// restored first.
    async fn get_object(&self, name: &str, range: Option<(u64, u64)>) -> Result<Bytes> {
        let mut req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(name));
        if let Some((off, len)) = range {
            if len == 0 {
                return Ok(Bytes::new());
            }
            req = req.range(format!("bytes={off}-{}", off + len - 1));
        }
        let out = match req
            .clone()
            .send()
            .await
            .map_err(|e| s3_error("s3:GetObject", e, self.via.as_deref()))
        {
            Ok(o) => o,
            Err(S3Error::Missing(_)) => {
                return Err(not_found(&format!(
                    "s3://{}/{}",
                    self.bucket,
                    self.key(name)
                )));
            }
            Err(e) if e.aws().code_is("InvalidObjectState") => {
                // An archived pack: bring a copy back, then read it.
                self.rehydrate(name).await?;
                req.send()
                    .await
                    .map_err(|e| s3_error("s3:GetObject", e, self.via.as_deref()))?
            }
            Err(e) => return Err(e.into()),
        };
        collect(out.body, name).await
    }

    /// `archive`: a data pack may take the repository's storage class.
    async fn put_object(
        &self,
        name: &str,
        data: Bytes,
        cond: Condition,
        archive: bool,
    ) -> Result<bool> {
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(name))
            .body(ByteStream::from(data));
        if let Some(class) = self
            .data_class
            .get()
            .filter(|_| archive && name.starts_with("data/"))
        {
            req = req.storage_class(aws_sdk_s3::types::StorageClass::from(class.as_str()));
        }
        match cond {
            Condition::None => {}
            Condition::Absent => req = req.if_none_match("*"),
            Condition::Matches(etag) => req = req.if_match(etag),
        }
        // If-Match on an object that vanished answers 404: someone else removed the lease.
        conditional("s3:PutObject", req.send().await, self.via.as_deref())
    }

    /// Restores an object of an archive storage class (GLACIER, DEEP_ARCHIVE)
    /// for a day and waits until its copy is readable. On AWS this takes
    /// minutes to hours; progress is logged.
    async fn rehydrate(&self, name: &str) -> Result<()> {
        if self.request_restore(name).await? {
            tracing::info!(
                "s3://{}/{}: restoring from the archive tier",
                self.bucket,
                self.key(name)
            );
            self.wait_restored(name).await?;
        }
        Ok(())
    }

    async fn head(
        &self,
        key: &str,
    ) -> Result<aws_sdk_s3::operation::head_object::HeadObjectOutput> {
        Ok(self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error("s3:HeadObject", e, self.via.as_deref()))?)
    }

    /// Asks S3 to restore an archived object; false when it is readable as
    /// it is (not archived, or already restored).
    async fn request_restore(&self, name: &str) -> Result<bool> {
        let key = self.key(name);
        let head = self.head(&key).await?;
        let class = head.storage_class().map(|c| c.as_str().to_string());
        let archived = match class.as_deref() {
            Some("GLACIER") | Some("DEEP_ARCHIVE") => true,
            // Only objects in its archive access tiers need a restore.
            Some("INTELLIGENT_TIERING") => head.archive_status().is_some(),
            _ => false,
        };
        let restored = head
            .restore()
            .is_some_and(|r| r.contains("ongoing-request=\"false\""));
        if !archived || restored {
            return Ok(false);
        }
        if head.restore().is_some() {
            // A restore is under way already: wait for it like for ours.
            return Ok(true);
        }
        let mut request = aws_sdk_s3::types::RestoreRequest::builder();
        if class.as_deref() != Some("INTELLIGENT_TIERING") {
            // Intelligent-Tiering restores take no duration or tier.
            request = request.days(1).glacier_job_parameters(
                aws_sdk_s3::types::GlacierJobParameters::builder()
                    .tier(aws_sdk_s3::types::Tier::Standard)
                    .build()
                    .expect("tier is set"),
            );
        }
        let sent = self
            .client
            .restore_object()
            .bucket(&self.bucket)
            .key(&key)
            .restore_request(request.build())
            .send()
            .await;
        match sent.map_err(|e| s3_error("s3:RestoreObject", e, self.via.as_deref())) {
            Ok(_) => Ok(true),
            Err(e) if e.aws().code_is("RestoreAlreadyInProgress") => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits until a restore of `name` has completed (48 hours at most).
    async fn wait_restored(&self, name: &str) -> Result<()> {
        let key = self.key(name);
        let started = std::time::Instant::now();
        loop {
            let head = self.head(&key).await?;
            let done = head
                .restore()
                .is_none_or(|r| r.contains("ongoing-request=\"false\""));
            if done {
                return Ok(());
            }
            if started.elapsed() > std::time::Duration::from_secs(48 * 3600) {
                return Err(RepoError::Aws(AwsError {
                    op: "s3:RestoreObject",
                    code: None,
                    message: format!("{key} was not restored within 48 hours"),
                    retryable: true,
                    status: None,
                }));
            }
            tokio::time::sleep(std::time::Duration::from_secs(
                if started.elapsed().as_secs() < 60 {
                    2
                } else {
                    60
                },
            ))
            .await;
        }
    }
}
