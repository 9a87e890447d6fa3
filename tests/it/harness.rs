//! The test harness: starts the pinned moto emulator (through
//! `tests/emulator/moto_server.py`, which applies the AWS-fidelity patches)
//! once per test binary, gives every test its own emulated account, runs the
//! real `skiff` binary against it, and builds independent SDK clients to
//! check what skiff did — never through skiff's own code.
//!
//! Moto isolates state per account: credentials from STS AssumeRole into
//! `arn:aws:iam::<id>:role/…` act in account `<id>`. Each test assumes a role
//! in a random account, so parallel tests never see each other's resources.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;

pub struct Emulator {
    pub endpoint: String,
    _child: Mutex<Child>,
}

static EMULATOR: OnceLock<Emulator> = OnceLock::new();

pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python of the emulator's virtualenv (`SKIFF_EMULATOR_PYTHON`, else made by tools/venv.sh).
pub fn emulator_python() -> PathBuf {
    if let Some(p) = std::env::var_os("SKIFF_EMULATOR_PYTHON") {
        return PathBuf::from(p);
    }
    let out = Command::new(project_root().join("tools/venv.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run tools/venv.sh");
    assert!(out.status.success(), "tools/venv.sh failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The emulator shared by every test in this binary (started on first use).
pub fn emulator() -> &'static Emulator {
    EMULATOR.get_or_init(|| {
        let mut child = Command::new(emulator_python())
            .arg(project_root().join("tests/emulator/moto_server.py"))
            .args(["--port", "0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the emulator");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read the emulator's port");
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .unwrap_or_else(|| panic!("emulator said {line:?}"));
        // stdin stays open in `child` for the life of this process; when the
        // process exits it closes and the emulator exits with it.
        Emulator {
            endpoint: format!("http://127.0.0.1:{port}"),
            _child: Mutex::new(child),
        }
    })
}

/// An emulated AWS account with its own credentials.
#[derive(Clone, Debug)]
pub struct Account {
    pub id: String,
    pub access_key: String,
    pub secret_key: String,
    pub session_token: String,
}

impl Account {
    /// The account's session credentials, for an SDK configuration of one's own.
    pub fn credentials(&self) -> Credentials {
        Credentials::new(
            &self.access_key,
            &self.secret_key,
            Some(self.session_token.clone()),
            None,
            "harness",
        )
    }
}

pub fn random_account_id() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    format!(
        "{}{:011}",
        rng.random_range(1..10),
        rng.random_range(0..100_000_000_000u64)
    )
}

impl Emulator {
    /// SDK configuration for the emulator in `region`, acting with `credentials`.
    fn sdk_as(&self, region: &str, credentials: Credentials) -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .endpoint_url(&self.endpoint)
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(credentials),
            )
            .build()
    }

    fn base_sdk(&self, region: &str) -> SdkConfig {
        self.sdk_as(
            region,
            Credentials::new("test", "test", None, None, "harness"),
        )
    }

    /// A fresh account nobody else uses.
    pub async fn account(&self) -> Account {
        self.account_with_id(&random_account_id()).await
    }

    pub async fn account_with_id(&self, id: &str) -> Account {
        let sts = aws_sdk_sts::Client::new(&self.base_sdk("us-east-1"));
        let out = sts
            .assume_role()
            .role_arn(format!("arn:aws:iam::{id}:role/skiff-test"))
            .role_session_name("harness")
            .send()
            .await
            .expect("assume role in the emulator");
        let c = out.credentials().expect("credentials");
        Account {
            id: id.to_string(),
            access_key: c.access_key_id().to_string(),
            secret_key: c.secret_access_key().to_string(),
            session_token: c.session_token().to_string(),
        }
    }

    /// SDK configuration acting in `account`, for independent checks.
    pub fn sdk(&self, account: &Account, region: &str) -> SdkConfig {
        self.sdk_as(region, account.credentials())
    }

    pub fn ec2(&self, account: &Account, region: &str) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::new(&self.sdk(account, region))
    }

    /// A new S3 bucket of `account` in `region` (its LocationConstraint),
    /// named `<prefix>-<random>`; its name.
    pub async fn bucket_in(&self, account: &Account, region: &str, prefix: &str) -> String {
        use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
        let bucket = format!("{prefix}-{}", rand::random::<u32>());
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&self.sdk(account, region))
                .force_path_style(true)
                .build(),
        );
        let mut create = s3.create_bucket().bucket(&bucket);
        // us-east-1 is the one region S3 takes without a constraint (and refuses one for).
        if region != "us-east-1" {
            create = create.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(region))
                    .build(),
            );
        }
        create.send().await.unwrap();
        bucket
    }
}

/// `[workers]` for tests: each worker's agent runs as a local process, and
/// a task reappears 5 s after its agent stops answering.
pub const LOCAL_WORKERS: &str = "[workers]\nlauncher = \"local\"\nvisibility_timeout = 5\n";

/// `[accounts.NAME]` in skiff.toml, reaching `account` by a role in it;
/// with `region`, the account's default region.
pub fn account_toml(name: &str, account: &Account, region: Option<&str>) -> String {
    let mut t = format!(
        "[accounts.{name}]\nrole_arn = \"arn:aws:iam::{}:role/skiff\"\n",
        account.id
    );
    if let Some(r) = region {
        t.push_str(&format!("region = \"{r}\"\n"));
    }
    t
}

/// The skiff binary under test: `SKIFF_BIN` when set (a copy of this
/// build, for when several checkouts share one target dir and each rebuild
/// replaces `target/debug/skiff`), else cargo's.
pub fn skiff_bin() -> PathBuf {
    std::env::var_os("SKIFF_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_skiff")))
}

/// A folder with a `skiff.toml`, where a test writes scripts and runs skiff
/// with the credentials of its own default account.
pub struct Workspace {
    pub dir: tempfile::TempDir,
    pub account: Account,
    pub region: String,
}

#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "skiff failed\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn failed(&self) -> &Self {
        assert_ne!(
            self.code, 0,
            "skiff succeeded but should have failed\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

impl Workspace {
    /// A workspace whose default account is fresh; `toml` is the rest of skiff.toml.
    pub async fn new(toml: &str) -> Workspace {
        let emu = emulator();
        let account = emu.account().await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("skiff.toml"),
            format!("region = \"us-east-1\"\n{toml}"),
        )
        .unwrap();
        Workspace {
            dir,
            account,
            region: "us-east-1".into(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(skiff_bin());
        c.args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("AWS_ENDPOINT_URL", &emulator().endpoint)
            .env("AWS_ACCESS_KEY_ID", &self.account.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &self.account.secret_key)
            .env("AWS_SESSION_TOKEN", &self.account.session_token)
            .env("AWS_REGION", &self.region)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("SKIFF_LOG", "warn")
            .kill_on_drop(true);
        c
    }

    pub async fn skiff(&self, args: &[&str]) -> Run {
        let out = self.command(args).output().await.expect("run skiff");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Writes `script` as `name` and runs it.
    pub async fn run_lua(&self, name: &str, script: &str, args: &[&str]) -> Run {
        self.write(name, script);
        let mut a = vec!["run", name];
        a.extend_from_slice(args);
        self.skiff(&a).await
    }

    pub fn ec2(&self, region: &str) -> aws_sdk_ec2::Client {
        emulator().ec2(&self.account, region)
    }
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}
