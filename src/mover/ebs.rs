//! EBS snapshots through the EBS direct APIs. Reading lists blocks
//! (ListSnapshotBlocks, or ListChangedBlocks against the parent's snapshot)
//! and fetches each with GetSnapshotBlock, checking its SHA-256; writing
//! starts a snapshot, puts every non-zero block with its checksum, and
//! completes it with the LINEAR aggregate checksum. Requests are spaced to the
//! per-snapshot quota and retried here (the client's own retries are off).

use std::sync::Arc;

use aws_lc_rs::digest;
use aws_sdk_ebs::primitives::ByteStream;
use aws_sdk_ebs::types::{ChecksumAggregationMethod, ChecksumAlgorithm, Status, Tag};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};

use super::pool::CpuPool;
use super::retry::{retry, RateLimiter};
use super::{is_zero, Base, Data, EbsSettings, Item, MoverError, Result, Token, BLOCK_SIZE};
use crate::cloud::AwsError;
use crate::repo::crypto::{sha256, Id};

const GIB: u64 = 1 << 30;

fn body_error(op: &'static str, e: impl std::fmt::Display) -> AwsError {
    AwsError {
        op,
        code: None,
        message: format!("reading the response body: {e}"),
        retryable: true,
        status: None,
    }
}

struct SourceInner {
    client: aws_sdk_ebs::Client,
    snapshot: String,
    /// The volume the snapshot was taken of, when known.
    volume: Option<String>,
    size: u64,
    settings: EbsSettings,
    limiter: RateLimiter,
    pool: CpuPool,
}

#[derive(Clone)]
pub struct EbsSource {
    inner: Arc<SourceInner>,
}

enum Listing {
    Full,
    Changed(String),
}

impl EbsSource {
    /// Opens a snapshot: learns its size, and checks its block size is EBS's 512 KiB.
    pub async fn open(
        client: aws_sdk_ebs::Client,
        snapshot: &str,
        settings: &EbsSettings,
        pool: CpuPool,
    ) -> Result<EbsSource> {
        let out = retry(&settings.retry, || async {
            client
                .list_snapshot_blocks()
                .snapshot_id(snapshot)
                .max_results(100)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("ebs:ListSnapshotBlocks", e))
        })
        .await?;
        check_block_size(out.block_size(), snapshot)?;
        let gib = out.volume_size().unwrap_or(0);
        if gib <= 0 {
            return Err(MoverError::Integrity {
                op: "ebs:ListSnapshotBlocks",
                message: format!("{snapshot}: the service reported no volume size"),
            });
        }
        Ok(EbsSource {
            inner: Arc::new(SourceInner {
                client,
                snapshot: snapshot.to_string(),
                volume: None,
                size: gib as u64 * GIB,
                limiter: RateLimiter::new(settings.requests_per_second),
                settings: settings.clone(),
                pool,
            }),
        })
    }

    pub fn size(&self) -> u64 {
        self.inner.size
    }

    pub fn snapshot(&self) -> &str {
        &self.inner.snapshot
    }

    pub fn volume(&self) -> Option<&str> {
        self.inner.volume.as_deref()
    }

    /// Names the volume the snapshot was taken of (restore points group by it).
    pub fn with_volume(mut self, volume: Option<String>) -> EbsSource {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.volume = volume;
        }
        self
    }

    pub fn pool(&self) -> &CpuPool {
        &self.inner.pool
    }

    /// The blocks to read: all written blocks, or with a parent snapshot only
    /// the blocks that differ from it (the rest are unchanged). Falls back to
    /// a full listing when the parent snapshot is gone or unrelated.
    pub async fn plan(
        &self,
        parent: Option<&str>,
    ) -> Result<(Base, BoxStream<'static, Result<Item>>)> {
        let (listing, base) = match parent {
            Some(p) => (Listing::Changed(p.to_string()), Base::Parent),
            None => (Listing::Full, Base::Zero),
        };
        let first = match page(&self.inner, &listing, None).await {
            Ok(f) => f,
            Err(MoverError::Aws(e))
                if matches!(listing, Listing::Changed(_))
                    && !e.retryable
                    && (e.code_is("ValidationException")
                        || e.code_is("ResourceNotFoundException")) =>
            {
                tracing::warn!(
                    "{}: cannot list the blocks changed since {} ({e}); reading the whole snapshot instead",
                    self.inner.snapshot,
                    parent.unwrap_or_default()
                );
                return Box::pin(self.plan(None)).await;
            }
            Err(e) => return Err(e),
        };
        let (items, next) = first;
        let inner = self.inner.clone();
        let rest = stream::try_unfold(next.map(Some), move |state: Option<Option<String>>| {
            let inner = inner.clone();
            let listing = match &listing {
                Listing::Full => Listing::Full,
                Listing::Changed(p) => Listing::Changed(p.clone()),
            };
            async move {
                let Some(Some(token)) = state else {
                    return Ok::<_, MoverError>(None);
                };
                let (items, next) = page(&inner, &listing, Some(token)).await?;
                Ok(Some((
                    stream::iter(items.into_iter().map(Ok)),
                    next.map(Some),
                )))
            }
        })
        .try_flatten();
        Ok((
            base,
            stream::iter(items.into_iter().map(Ok)).chain(rest).boxed(),
        ))
    }

    /// Fetches a block and verifies it against its checksum; returns it and the bytes read.
    pub async fn read(&self, item: Item) -> Result<(Data, u64)> {
        let token = match item.token {
            Token::Zero => return Ok((Data::Zero, 0)),
            Token::Ebs(t) => t,
            other => {
                return Err(MoverError::Invalid(format!(
                    "an EBS source cannot read {other:?}"
                )))
            }
        };
        let inner = &self.inner;
        let index = i32::try_from(item.index).map_err(|_| {
            MoverError::Invalid(format!("block index {} is out of range", item.index))
        })?;
        // A block damaged in transit (a checksum that does not match, a short
        // body) is read again like a transient fault; only damage that
        // persists through every attempt fails the copy.
        let policy = &inner.settings.retry;
        let mut attempt = 1;
        let (sha, zero, bytes) = loop {
            match self.fetch_verified(index, item.index, &token).await {
                Ok(v) => break v,
                Err(Fetched::Damaged(m)) if attempt < policy.max_attempts => {
                    tracing::debug!("{m} (attempt {attempt}); reading it again");
                    tokio::time::sleep(policy.backoff(attempt)).await;
                    attempt += 1;
                }
                Err(Fetched::Damaged(m)) => {
                    return Err(MoverError::Integrity {
                        op: "ebs:GetSnapshotBlock",
                        message: format!("{m} (in each of {attempt} reads)"),
                    })
                }
                Err(Fetched::Failed(e)) => return Err(e),
            }
        };
        let data = if zero {
            Data::Zero
        } else {
            Data::Bytes {
                bytes,
                sha: Some(sha),
            }
        };
        Ok((data, BLOCK_SIZE as u64))
    }
}

/// Why one read of a block gave no verified data.
enum Fetched {
    /// The data does not match its checksum, or is short: worth reading again.
    Damaged(String),
    Failed(MoverError),
}

impl EbsSource {
    /// One GetSnapshotBlock (AWS errors retried inside), verified against
    /// its checksum: the block's SHA-256, whether it is zero, and its bytes.
    async fn fetch_verified(
        &self,
        index: i32,
        block: u64,
        token: &str,
    ) -> std::result::Result<([u8; 32], bool, bytes::Bytes), Fetched> {
        let inner = &self.inner;
        let (bytes, checksum, algorithm) = retry(&inner.settings.retry, || async {
            inner.limiter.acquire().await;
            let out = inner
                .client
                .get_snapshot_block()
                .snapshot_id(&inner.snapshot)
                .block_index(index)
                .block_token(token)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("ebs:GetSnapshotBlock", e))?;
            let checksum = out.checksum().map(str::to_string);
            let algorithm = out.checksum_algorithm().cloned();
            let body = out
                .block_data
                .collect()
                .await
                .map_err(|e| body_error("ebs:GetSnapshotBlock", e))?;
            Ok((body.into_bytes(), checksum, algorithm))
        })
        .await
        .map_err(|e| Fetched::Failed(e.into()))?;
        let what = |m: String| format!("{} block {block}: {m}", inner.snapshot);
        let permanent = |m: String| {
            Fetched::Failed(MoverError::Integrity {
                op: "ebs:GetSnapshotBlock",
                message: what(m),
            })
        };
        if bytes.len() != BLOCK_SIZE {
            return Err(Fetched::Damaged(what(format!(
                "expected {BLOCK_SIZE} bytes, got {}",
                bytes.len()
            ))));
        }
        if algorithm.is_some_and(|a| a != ChecksumAlgorithm::ChecksumAlgorithmSha256) {
            return Err(permanent("the checksum is not SHA-256".into()));
        }
        let expected = checksum
            .as_deref()
            .and_then(|c| B64.decode(c).ok())
            .ok_or_else(|| permanent("the response carries no valid checksum".into()))?;
        let (sha, zero, bytes) = inner
            .pool
            .run(move || {
                let sha = sha256(&bytes);
                let zero = is_zero(&bytes);
                (sha, zero, bytes)
            })
            .await;
        if expected != sha {
            return Err(Fetched::Damaged(what(format!(
                "checksum mismatch: the service says {}, the data hashes to {}",
                checksum.unwrap_or_default(),
                B64.encode(sha)
            ))));
        }
        Ok((sha, zero, bytes))
    }
}

fn check_block_size(bs: Option<i32>, snapshot: &str) -> Result<()> {
    if bs != Some(BLOCK_SIZE as i32) {
        return Err(MoverError::Integrity {
            op: "ebs",
            message: format!("{snapshot}: block size {bs:?}, expected {BLOCK_SIZE} (EBS's)"),
        });
    }
    Ok(())
}

/// One page of a listing: its items and the next page's token.
async fn page(
    inner: &SourceInner,
    listing: &Listing,
    token: Option<String>,
) -> Result<(Vec<Item>, Option<String>)> {
    let max = inner.settings.list_page_size;
    match listing {
        Listing::Full => {
            let out = retry(&inner.settings.retry, || async {
                inner
                    .client
                    .list_snapshot_blocks()
                    .snapshot_id(&inner.snapshot)
                    .max_results(max)
                    .set_next_token(token.clone())
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("ebs:ListSnapshotBlocks", e))
            })
            .await?;
            check_block_size(out.block_size(), &inner.snapshot)?;
            let items = out
                .blocks()
                .iter()
                .map(|b| {
                    Ok(Item {
                        index: block_index(b.block_index(), &inner.snapshot)?,
                        token: Token::Ebs(b.block_token().unwrap_or_default().to_string()),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok((items, out.next_token().map(str::to_string)))
        }
        Listing::Changed(parent) => {
            let out = retry(&inner.settings.retry, || async {
                inner
                    .client
                    .list_changed_blocks()
                    .first_snapshot_id(parent)
                    .second_snapshot_id(&inner.snapshot)
                    .max_results(max)
                    .set_next_token(token.clone())
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("ebs:ListChangedBlocks", e))
            })
            .await?;
            check_block_size(out.block_size(), &inner.snapshot)?;
            let items = out
                .changed_blocks()
                .iter()
                .map(|b| {
                    Ok(Item {
                        index: block_index(b.block_index(), &inner.snapshot)?,
                        token: match b.second_block_token() {
                            Some(t) => Token::Ebs(t.to_string()),
                            None => Token::Zero,
                        },
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok((items, out.next_token().map(str::to_string)))
        }
    }
}

fn block_index(i: Option<i32>, snapshot: &str) -> Result<u64> {
    match i {
        Some(i) if i >= 0 => Ok(i as u64),
        other => Err(MoverError::Integrity {
            op: "ebs:list",
            message: format!("{snapshot}: the service listed a block with index {other:?}"),
        }),
    }
}

/// The volume a snapshot was taken of, when EC2 knows a real one
/// (snapshots written through the direct APIs report `vol-ffffffff`).
pub async fn volume_of(ec2: &aws_sdk_ec2::Client, snapshot: &str) -> Option<String> {
    let out = ec2
        .describe_snapshots()
        .snapshot_ids(snapshot)
        .send()
        .await
        .ok()?;
    let vol = out.snapshots().first()?.volume_id()?.to_string();
    (vol != "vol-ffffffff").then_some(vol)
}

struct SinkInner {
    client: aws_sdk_ebs::Client,
    ec2: aws_sdk_ec2::Client,
    snapshot: String,
    settings: EbsSettings,
    limiter: RateLimiter,
    pool: CpuPool,
}

/// A snapshot being written.
pub struct EbsSink {
    inner: Arc<SinkInner>,
    aggregate: digest::Context,
    written: u64,
    /// Completed, or deleted: nothing for `Drop` to clean up.
    settled: bool,
}

#[derive(Clone)]
pub struct EbsWriter {
    inner: Arc<SinkInner>,
}

impl EbsSink {
    /// Starts a snapshot big enough for `size` bytes (EBS sizes are whole GiB).
    pub async fn start(
        client: aws_sdk_ebs::Client,
        ec2: aws_sdk_ec2::Client,
        size: u64,
        tags: &std::collections::BTreeMap<String, String>,
        description: &str,
        settings: &EbsSettings,
        pool: CpuPool,
    ) -> Result<EbsSink> {
        let gib = size.div_ceil(GIB).max(1);
        let token = uuid::Uuid::new_v4().to_string();
        // The owner tag lets the reaper delete the snapshot if this process
        // dies before completing it (kill -9, a lost host).
        let owner = crate::cloud::owner::this_owner();
        let tags: Vec<Tag> = tags
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain([(crate::cloud::tags::OWNER, owner.as_str())])
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        let timeout = (settings.snapshot_timeout.as_secs() / 60).clamp(10, 4320) as i32;
        let out = retry(&settings.retry, || async {
            client
                .start_snapshot()
                .volume_size(gib as i64)
                .set_tags(Some(tags.clone()))
                .description(description)
                .client_token(&token)
                .timeout(timeout)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("ebs:StartSnapshot", e))
        })
        .await?;
        let snapshot = out.snapshot_id().unwrap_or_default().to_string();
        check_block_size(out.block_size(), &snapshot)?;
        Ok(EbsSink {
            inner: Arc::new(SinkInner {
                client,
                ec2,
                snapshot,
                limiter: RateLimiter::new(settings.requests_per_second),
                settings: settings.clone(),
                pool,
            }),
            aggregate: digest::Context::new(&digest::SHA256),
            written: 0,
            settled: false,
        })
    }

    pub fn snapshot(&self) -> &str {
        &self.inner.snapshot
    }

    pub fn writer(&self) -> EbsWriter {
        EbsWriter {
            inner: self.inner.clone(),
        }
    }

    /// Records a written block's checksum; call in block order.
    pub fn commit(&mut self, sha: &Id) {
        self.aggregate.update(sha);
        self.written += 1;
    }

    /// Completes the snapshot with the count and LINEAR checksum of the blocks written.
    pub async fn finish(mut self) -> Result<String> {
        let inner = self.inner.clone();
        let aggregate =
            std::mem::replace(&mut self.aggregate, digest::Context::new(&digest::SHA256));
        let checksum = B64.encode(aggregate.finish().as_ref());
        let count = i32::try_from(self.written)
            .map_err(|_| MoverError::Invalid("too many blocks for one snapshot".into()))?;
        let out = retry(&inner.settings.retry, || async {
            inner
                .client
                .complete_snapshot()
                .snapshot_id(&inner.snapshot)
                .changed_blocks_count(count)
                .checksum(&checksum)
                .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
                .checksum_aggregation_method(ChecksumAggregationMethod::ChecksumAggregationLinear)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("ebs:CompleteSnapshot", e))
        })
        .await?;
        if out.status() == Some(&Status::Error) {
            return Err(MoverError::Integrity {
                op: "ebs:CompleteSnapshot",
                message: format!(
                    "{}: the service put the snapshot in the error state",
                    inner.snapshot
                ),
            });
        }
        self.settled = true;
        Ok(inner.snapshot.clone())
    }
}

impl EbsSink {
    /// Deletes the snapshot after a failed or stopped copy, so no pending
    /// snapshot is left behind (and billed); says what it did either way.
    pub async fn abort(mut self) {
        self.settled = true;
        delete_incomplete(self.inner.clone()).await;
    }
}

/// A copy dropped where it stood (a script stopped by a signal, a cancelled
/// run) deletes its snapshot in the background; [`super::cleanups::settle`]
/// lets the process wait for that before it exits.
impl Drop for EbsSink {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let inner = self.inner.clone();
        super::cleanups::spawn(delete_incomplete(inner));
    }
}

/// Deletes a snapshot a copy started and will not complete, and says so.
async fn delete_incomplete(inner: Arc<SinkInner>) {
    {
        let deleted = retry(&inner.settings.retry, || async {
            match inner
                .ec2
                .delete_snapshot()
                .snapshot_id(&inner.snapshot)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("ec2:DeleteSnapshot", e))
            {
                Err(e) if e.code_is("InvalidSnapshot.NotFound") => Ok(()),
                other => other.map(drop),
            }
        })
        .await;
        match deleted {
            Ok(()) => tracing::warn!(
                "{}: deleted the incomplete snapshot this copy had started",
                inner.snapshot
            ),
            Err(e) => tracing::error!(
                "{}: the incomplete snapshot this copy had started could not be deleted ({e}); delete it with `aws ec2 delete-snapshot --snapshot-id {}`",
                inner.snapshot,
                inner.snapshot
            ),
        }
    }
}

impl EbsWriter {
    /// Puts block `index` with its checksum; zero blocks are skipped. Returns
    /// the block's SHA-256 when it was written.
    pub async fn write(&self, index: u64, data: Data) -> Result<Option<Id>> {
        let Some((bytes, sha)) = data.into_bytes() else {
            return Ok(None);
        };
        let inner = &self.inner;
        let (bytes, sha): (Bytes, Id) = match sha {
            Some(s) => (bytes, s),
            None => {
                let (s, b) = inner.pool.run(move || (sha256(&bytes), bytes)).await;
                (b, s)
            }
        };
        let index = i32::try_from(index)
            .map_err(|_| MoverError::Invalid(format!("block index {index} is out of range")))?;
        let checksum = B64.encode(sha);
        retry(&inner.settings.retry, || async {
            inner.limiter.acquire().await;
            inner
                .client
                .put_snapshot_block()
                .snapshot_id(&inner.snapshot)
                .block_index(index)
                .block_data(ByteStream::from(bytes.clone()))
                .data_length(BLOCK_SIZE as i32)
                .checksum(&checksum)
                .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("ebs:PutSnapshotBlock", e))
        })
        .await?;
        Ok(Some(sha))
    }
}
