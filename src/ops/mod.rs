//! Operations: one typed value per thing skiff does where the data is —
//! copy a volume; create, list, check, forget, prune and repair a repository. The
//! command line, the Lua primitives and a worker's agent all build an [`Op`]
//! and call its `run`; before a task goes to a worker, [`Op::for_worker`]
//! rewrites it on its typed fields. Nothing here knows Lua.

pub mod agent;
mod args;
mod copy;
pub mod flr;
pub mod parse;
mod repo;
mod worker;

use std::future::Future;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use args::{ParentArg, Place, RepoLocation};
pub use copy::CopyOpts;
pub use repo::{
    CheckOpts, ForgetOpts, Forgotten, InitOpts, InitOutput, Points, PointsOpts, PruneOpts,
    RepairOpts,
};
pub use worker::ForWorker;

use crate::cloud::{Cloud, S3Endpoint, Scope};
use crate::failure::{Error, Failure};
use crate::mover::{Aws, MoverSettings, Opener, ProgressFn, Stop};
use crate::repo::password::PasswordSource;
use crate::repo::Repo;

/// The tag that ties a restore point to the task that wrote it, so a task
/// delivered again returns that point instead of writing another.
pub const TASK_TAG: &str = "skiff:task";

/// What a run gets besides its options.
pub struct RunCx<'a> {
    pub cloud: Arc<Cloud>,
    /// The worker task this run serves, when it runs in an agent.
    pub task: Option<String>,
    pub progress: Option<ProgressFn<'a>>,
    /// Asks the run to end early, removing what it created (see
    /// [`Operation::stoppable`]).
    pub stop: Stop,
}

/// One operation's options, read with unknown fields refused; its run; and
/// how it is rewritten for a worker.
pub trait Operation: Serialize + DeserializeOwned + Send {
    /// The primitive's name: `copy_volume`, `repo.init`, …
    const NAME: &'static str;
    type Output: Serialize + Send;

    fn run(self, cx: RunCx<'_>) -> impl Future<Output = Result<Self::Output, Error>> + Send;

    /// Checks the options as a worker in `w`'s scope will use them and makes
    /// every account and region explicit (see [`ForWorker`]).
    fn for_worker(&mut self, w: &ForWorker<'_>) -> Result<(), Error>;

    /// Whether the run watches [`RunCx::stop`] and cleans up after itself
    /// when it fires. One that does not leaves nothing half-made when it is
    /// dropped where it stands (a repository stays consistent at every
    /// await), so an interrupted caller may simply drop it.
    fn stoppable(&self) -> bool {
        false
    }

    /// The operation's own password source, account and region (the
    /// command line's `--password-*`, `--account` and `--region`).
    fn access_mut(&mut self) -> AccessMut<'_>;

    /// Whether a run needs AWS at all (local copies never touch it).
    fn needs_aws(&self) -> bool;
}

/// An operation's password source, account, region and S3 endpoint, to set.
pub type AccessMut<'a> = (
    &'a mut Option<PasswordSource>,
    &'a mut Option<String>,
    &'a mut Option<String>,
    &'a mut Option<S3Endpoint>,
);

/// Declares [`Op`] from one list of operations, with its names and the
/// dispatch of each method: adding an operation is one line here.
macro_rules! operations {
    ($($variant:ident($opts:ty),)*) => {
        /// Every operation, as the CLI, the Lua primitives and tasks build it.
        #[derive(Debug, Clone)]
        pub enum Op {
            $($variant($opts),)*
        }

        impl Op {
            /// The names scripts call and tasks carry.
            pub const NAMES: &'static [&'static str] = &[$(<$opts as Operation>::NAME,)*];

            pub fn name(&self) -> &'static str {
                match self {
                    $(Op::$variant(_) => <$opts as Operation>::NAME,)*
                }
            }

            /// Reads an operation from its name and options (a primitive's
            /// table as JSON, or a task's arguments).
            pub fn parse(name: &str, args: serde_json::Value) -> Result<Op, Error> {
                $(if name == <$opts as Operation>::NAME {
                    return Ok(Op::$variant(parse::parse_json(name, args)?));
                })*
                Err(Error::usage(
                    name,
                    format!("no such operation; there are {}", Op::NAMES.join(", ")),
                ))
            }

            /// The options, as a task carries them.
            pub fn args(&self) -> Result<serde_json::Value, Error> {
                match self {
                    $(Op::$variant(o) => to_json(o),)*
                }
            }

            pub async fn run(self, cx: RunCx<'_>) -> Result<serde_json::Value, Error> {
                match self {
                    $(Op::$variant(o) => to_json(&o.run(cx).await?),)*
                }
            }

            /// The operation as a worker acting in `worker` must receive it:
            /// refused when the worker could not reach its data, with every
            /// region made explicit and every account other than the
            /// worker's named; and the roles of those accounts, which travel
            /// with the task.
            pub fn for_worker(
                mut self,
                cloud: &Cloud,
                worker: &Scope,
            ) -> Result<(Op, std::collections::BTreeMap<String, crate::config::AccountConfig>), Error> {
                let w = ForWorker::new(cloud, worker, self.name());
                match &mut self {
                    $(Op::$variant(o) => o.for_worker(&w)?,)*
                }
                Ok((self, w.into_roles()))
            }

            pub fn needs_aws(&self) -> bool {
                match self {
                    $(Op::$variant(o) => o.needs_aws(),)*
                }
            }
        }
    };
}

operations! {
    Copy(CopyOpts),
    RepoInit(InitOpts),
    RepoPoints(PointsOpts),
    RepoCheck(CheckOpts),
    RepoForget(ForgetOpts),
    RepoPrune(PruneOpts),
    RepoRepair(RepairOpts),
}

pub(crate) fn to_json<T: Serialize>(v: &T) -> Result<serde_json::Value, Error> {
    serde_json::to_value(v).map_err(|e| Failure::internal("serialize", e).into())
}

/// How one operation reaches AWS: its own account and region, which each
/// location and password may override.
pub(crate) struct Access<'a> {
    pub cloud: &'a Arc<Cloud>,
    pub prim: &'static str,
    pub account: Option<&'a str>,
    pub region: Option<&'a str>,
    /// Where S3 requests for the operation's repositories go.
    pub s3_endpoint: Option<&'a S3Endpoint>,
}

impl Access<'_> {
    /// The AWS access of the option `what`, resolved only when it needs
    /// any; a repository's requests go to `s3_endpoint`, else the operation's.
    pub fn aws(
        &self,
        what: &str,
        needs: bool,
        account: Option<&str>,
        region: Option<&str>,
        s3_endpoint: Option<&S3Endpoint>,
    ) -> Result<Option<Aws>, Error> {
        if !needs {
            return Ok(None);
        }
        let scope = self
            .cloud
            .scope(account.or(self.account), region.or(self.region))
            .map_err(|e| {
                let which = match e {
                    crate::cloud::ScopeError::UnknownAccount { .. } => "account",
                    _ => "region",
                };
                Error::field(self.prim, &format!("{what}.{which}"), e)
            })?;
        Ok(Some(Aws {
            cloud: self.cloud.clone(),
            scope,
            s3_endpoint: s3_endpoint.or(self.s3_endpoint).cloned(),
        }))
    }

    /// What opens repositories with `password` (default: $SKIFF_PASSWORD).
    pub fn opener(&self, password: Option<PasswordSource>) -> Result<Opener, Error> {
        let (password, aws) = self.password(password)?;
        Ok(Opener::new(password, aws, MoverSettings::default()))
    }

    /// As [`Access::opener`], on the CPU pool of `beside` (the other end of
    /// the same copy), so one copy starts one pool.
    pub fn opener_beside(
        &self,
        beside: &Opener,
        password: Option<PasswordSource>,
    ) -> Result<Opener, Error> {
        let (password, aws) = self.password(password)?;
        Ok(Opener::with_pool(
            password,
            aws,
            beside.settings.clone(),
            beside.pool.clone(),
        ))
    }

    /// The password source (default: $SKIFF_PASSWORD) and, for an SSM one,
    /// the AWS access that reads it.
    fn password(
        &self,
        password: Option<PasswordSource>,
    ) -> Result<(PasswordSource, Option<Aws>), Error> {
        let password = password.unwrap_or_default();
        let aws = match password.ssm() {
            Some(p) => self.aws(
                "password",
                true,
                p.account.as_deref(),
                p.region.as_deref(),
                None,
            )?,
            None => None,
        };
        Ok((password, aws))
    }

    /// Opens the repository at `location`, once for the whole operation.
    pub async fn open(
        &self,
        location: &RepoLocation,
        password: Option<PasswordSource>,
    ) -> Result<Arc<Repo>, Error> {
        let aws = self.aws("location", location.is_s3(), None, None, None)?;
        self.opener(password)?
            .repo(&location.0, aws.as_ref())
            .await
            .map_err(|e| e.into_error(self.prim))
    }
}
