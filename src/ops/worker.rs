//! Rewriting an operation for a worker. A worker acts with its own instance
//! role in its own account, and in another account `[accounts]` names by
//! assuming that account's role from its instance role (the role travels
//! with the task; the worker role needs `sts:AssumeRole` on it). It reads
//! and writes EBS snapshots only in its own region, reaches S3 and SSM in
//! any region, and reads the repository password from SSM (env and file
//! sources stay on this machine). Each AWS place of an operation is checked
//! against that, then given an explicit region, and an account name only
//! when it is not the worker's own (on the worker, no account name means
//! its own role).

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::cloud::{Cloud, Scope};
use crate::config::AccountConfig;
use crate::failure::Error;
use crate::repo::password::PasswordSource;

pub struct ForWorker<'a> {
    cloud: &'a Cloud,
    worker: &'a Scope,
    prim: &'static str,
    /// The other accounts the operation acts in, with the roles to assume.
    roles: RefCell<BTreeMap<String, AccountConfig>>,
}

impl<'a> ForWorker<'a> {
    pub fn new(cloud: &'a Cloud, worker: &'a Scope, prim: &'static str) -> ForWorker<'a> {
        ForWorker {
            cloud,
            worker,
            prim,
            roles: RefCell::new(BTreeMap::new()),
        }
    }

    /// The roles of the other accounts the operation acts in, by account name.
    pub fn into_roles(self) -> BTreeMap<String, AccountConfig> {
        self.roles.into_inner()
    }

    /// The scope an option names (account and region, else the operation's);
    /// what names no account is the worker's own. Another account is
    /// reachable only through its `[accounts]` role, which is recorded to
    /// travel with the task. Returns the account name the worker must keep
    /// (`None`: its own).
    fn scope(
        &self,
        field: &str,
        account: Option<&str>,
        region: Option<&str>,
    ) -> Result<(Scope, Option<String>), Error> {
        let account = account.unwrap_or(&self.worker.account);
        let s = self
            .cloud
            .scope(Some(account), region)
            .map_err(|e| Error::field(self.prim, field, e))?;
        if s.account == self.worker.account {
            return Ok((s, None));
        }
        match self.cloud.config().accounts.get(&s.account) {
            Some(role) => {
                self.roles
                    .borrow_mut()
                    .insert(s.account.clone(), role.clone());
                let name = s.account.clone();
                Ok((s, Some(name)))
            }
            None => Err(Error::field(
                self.prim,
                field,
                format!(
                    "is in account {}, which skiff reaches with its own credentials, not a role; the worker acts in account {} and can reach another account only through a role in [accounts]",
                    s.account, self.worker.account
                ),
            )),
        }
    }

    /// A location that reaches AWS (`ebs`: an EBS snapshot, which a worker
    /// reads and writes only in its own region). `op_account` and
    /// `op_region` are the operation's own, which the place may override.
    pub fn place(
        &self,
        field: &str,
        ebs: bool,
        account: &mut Option<String>,
        region: &mut Option<String>,
        op_account: &Option<String>,
        op_region: &Option<String>,
    ) -> Result<(), Error> {
        let (s, other) = self.scope(
            field,
            account.as_deref().or(op_account.as_deref()),
            region.as_deref().or(op_region.as_deref()),
        )?;
        if ebs && s.region != self.worker.region {
            return Err(Error::field(
                self.prim,
                field,
                format!(
                    "is in {}, but the worker is in {}; deploy the worker where the snapshot is",
                    s.region, self.worker.region
                ),
            ));
        }
        *account = other;
        *region = Some(s.region);
        Ok(())
    }

    /// A password source: SSM only, read in the worker's region unless named.
    pub fn password(
        &self,
        field: &str,
        password: &mut Option<PasswordSource>,
        op_account: &Option<String>,
        op_region: &Option<String>,
    ) -> Result<(), Error> {
        match password {
            None => Ok(()),
            Some(PasswordSource::Ssm(p)) => {
                let region = p
                    .region
                    .as_deref()
                    .or(op_region.as_deref())
                    .unwrap_or(&self.worker.region);
                let (s, other) = self.scope(
                    field,
                    p.account.as_deref().or(op_account.as_deref()),
                    Some(region),
                )?;
                p.account = other;
                p.region = Some(s.region);
                Ok(())
            }
            Some(_) => Err(Error::field(
                self.prim,
                field,
                "a worker reads the repository password from SSM Parameter Store ({ssm = \"/name\"}) through its instance role; env and file sources stay on this machine",
            )),
        }
    }

    /// A repository operation's `location` (reaching AWS when in S3), whose
    /// account and region are the operation's own, and its password.
    pub fn repository(
        &self,
        s3: bool,
        account: &mut Option<String>,
        region: &mut Option<String>,
        password: &mut Option<PasswordSource>,
    ) -> Result<(), Error> {
        let (acc, reg) = (account.take(), region.take());
        if s3 {
            let (mut a, mut r) = (acc.clone(), reg.clone());
            self.place("location", false, &mut a, &mut r, &None, &None)?;
            *account = a;
            *region = r;
        }
        self.password("password", password, &acc, &reg)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::{AccountConfig, Config};
    use crate::ops::Op;

    fn cloud() -> Cloud {
        let mut config = Config {
            region: Some("us-east-1".into()),
            ..Default::default()
        };
        config.accounts.insert(
            "prod".into(),
            AccountConfig {
                role_arn: "arn:aws:iam::222222222222:role/skiff".into(),
                external_id: None,
                region: Some("eu-west-1".into()),
            },
        );
        let sdk = aws_types::SdkConfig::builder().build();
        Cloud::with_base(sdk, Arc::new(config))
    }

    fn worker(account: &str, region: &str) -> Scope {
        Scope {
            account: account.into(),
            region: region.into(),
        }
    }

    fn rewrite(op: &str, args: serde_json::Value, w: &Scope) -> Result<serde_json::Value, String> {
        let op = Op::parse(op, args).map_err(|e| e.to_string())?;
        op.for_worker(&cloud(), w)
            .and_then(|(o, _)| o.args())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn names_every_region_and_no_account() {
        let w = worker("default", "us-east-1");
        let out = rewrite(
            "copy_volume",
            serde_json::json!({"from": "ebs:snap-01", "to": "repo:s3://bkt/r",
                "password": {"ssm": "/pw"}, "region": "us-east-1"}),
            &w,
        )
        .unwrap();
        assert_eq!(
            out,
            serde_json::json!({"from": {"location": "ebs:snap-01", "region": "us-east-1"},
                "to": {"location": "repo:s3://bkt/r", "region": "us-east-1"},
                "password": {"ssm": "/pw", "region": "us-east-1"},
                "overwrite": false, "wait": 0})
        );
        let out = rewrite(
            "repo.check",
            serde_json::json!({"location": "s3://bkt/r", "region": "eu-west-2",
                "password": {"ssm": "/pw"}}),
            &w,
        )
        .unwrap();
        assert_eq!(out["region"], "eu-west-2");
        assert_eq!(
            out["password"],
            serde_json::json!({"ssm": "/pw", "region": "eu-west-2"})
        );
        // A local repository needs no region at all.
        let out = rewrite("repo.points", serde_json::json!({"location": "/srv/r"}), &w).unwrap();
        assert!(out.get("region").is_none(), "{out}");
    }

    #[test]
    fn another_account_travels_as_its_role() {
        let w = worker("default", "us-east-1");
        let op = Op::parse(
            "copy_volume",
            serde_json::json!({"from": "ebs:snap-01", "to": "repo:s3://bkt/r", "account": "prod",
                "region": "us-east-1", "password": {"ssm": "/pw", "account": "prod"}}),
        )
        .unwrap();
        let (op, roles) = op.for_worker(&cloud(), &w).unwrap();
        assert_eq!(
            op.args().unwrap(),
            serde_json::json!({"from": {"location": "ebs:snap-01", "account": "prod", "region": "us-east-1"},
                "to": {"location": "repo:s3://bkt/r", "account": "prod", "region": "us-east-1"},
                "password": {"ssm": "/pw", "account": "prod", "region": "us-east-1"},
                "overwrite": false, "wait": 0})
        );
        assert_eq!(roles.keys().collect::<Vec<_>>(), ["prod"]);
        assert_eq!(
            roles["prod"].role_arn,
            "arn:aws:iam::222222222222:role/skiff"
        );
        // The worker's own account stays unnamed, and needs no role.
        let (_, roles) = Op::parse("repo.check", serde_json::json!({"location": "s3://bkt/r"}))
            .unwrap()
            .for_worker(&cloud(), &w)
            .unwrap();
        assert!(roles.is_empty());
    }

    #[test]
    fn refuses_what_the_worker_cannot_reach() {
        let w = worker("default", "us-east-1");
        let copy = |extra: serde_json::Value| {
            let mut args = serde_json::json!({"from": "ebs:snap-01", "to": "repo:/srv/r"});
            args.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            rewrite("copy_volume", args, &w).unwrap_err()
        };
        assert_eq!(
            copy(serde_json::json!({"region": "eu-west-1"})),
            "copy_volume: opts.from: is in eu-west-1, but the worker is in us-east-1; deploy the worker where the snapshot is"
        );
        assert_eq!(
            copy(serde_json::json!({"password": {"env": "PW"}})),
            "copy_volume: opts.password: a worker reads the repository password from SSM Parameter Store ({ssm = \"/name\"}) through its instance role; env and file sources stay on this machine"
        );
        assert_eq!(
            copy(serde_json::json!({"to": {"location": "repo:/srv/r", "password": {"file": "/pw"}}})),
            "copy_volume: opts.to.password: a worker reads the repository password from SSM Parameter Store ({ssm = \"/name\"}) through its instance role; env and file sources stay on this machine"
        );
        assert!(copy(serde_json::json!({"account": "nosuch"}))
            .starts_with("copy_volume: opts.from: unknown account \"nosuch\""));
        // The ambient credentials are not a role a worker could assume.
        assert_eq!(
            rewrite(
                "repo.prune",
                serde_json::json!({"location": "s3://bkt/r", "account": "default"}),
                &worker("prod", "eu-west-1")
            )
            .unwrap_err(),
            "repo.prune: opts.location: is in account default, which skiff reaches with its own credentials, not a role; the worker acts in account prod and can reach another account only through a role in [accounts]"
        );
        // Options are checked as the worker will read them, before anything is sent.
        assert_eq!(
            rewrite("repo.forget", serde_json::json!({"location": "/r", "keep": 1}), &w)
                .unwrap_err(),
            "repo.forget: opts.keep: unknown option; expected one of location, keep_last, keep_daily, keep_weekly, keep_monthly, keep_yearly, volume, tags, points, dry_run, wait, password, account, region, s3_endpoint"
        );
    }

    #[test]
    fn a_worker_in_another_account_reaches_that_accounts_data() {
        let w = worker("prod", "eu-west-1");
        let out = rewrite(
            "copy_volume",
            serde_json::json!({"from": "ebs:snap-01", "to": "ebs:", "account": "prod"}),
            &w,
        )
        .unwrap();
        assert_eq!(out["from"]["region"], "eu-west-1");
        assert!(out["from"].get("account").is_none());
        assert!(out.get("account").is_none());
    }
}
