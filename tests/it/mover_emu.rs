//! What the data-mover tests need on top of the shared harness: an account
//! as SDK configurations and as skiff's own access, and the EBS fault
//! control of tests/emulator/patches/ebs.py (which also makes the emulator's
//! EBS enforce AWS's documented rules).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::sync::Arc;

use aws_config::SdkConfig;
use aws_credential_types::Credentials;

use crate::harness::emulator;

#[derive(Clone, Debug)]
pub struct Account {
    pub id: String,
    pub credentials: Credentials,
    sdk: SdkConfig,
}

/// A fresh emulated account (the harness assumes a role in a random account id).
pub async fn account() -> Account {
    Account::from_harness(&emulator().account().await)
}

impl Account {
    /// The same account as the harness's (for fault control).
    pub fn from_harness(a: &crate::harness::Account) -> Account {
        Account {
            credentials: a.credentials(),
            sdk: emulator().sdk(a, "us-east-1"),
            id: a.id.clone(),
        }
    }

    pub fn sdk(&self) -> SdkConfig {
        self.sdk.clone()
    }

    /// An EBS client independent of skiff's (default SDK retries), for checks.
    pub fn ebs(&self) -> aws_sdk_ebs::Client {
        aws_sdk_ebs::Client::new(&self.sdk())
    }

    pub fn s3(&self) -> aws_sdk_s3::Client {
        aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&self.sdk())
                .force_path_style(true)
                .build(),
        )
    }

    /// skiff's access to this account, as the data mover takes it.
    pub fn aws(&self) -> skiff::mover::Aws {
        let cloud = Arc::new(skiff::cloud::Cloud::with_base(
            self.sdk(),
            Arc::new(skiff::config::Config::default()),
        ));
        let scope = cloud.scope(None, Some("us-east-1")).unwrap();
        skiff::mover::Aws::new(cloud, scope)
    }

    /// Sets this account's EBS fault injection (see tests/emulator/patches/ebs.py).
    pub fn faults(&self, json: &str) -> serde_json::Value {
        let body = json.replacen('{', &format!("{{\"account\": \"{}\", ", self.id), 1);
        http("POST", "/skiff/faults", &body)
    }

    /// Fault settings and request counters (per operation, GetSnapshotBlock per snapshot).
    pub fn counters(&self) -> serde_json::Value {
        http("GET", &format!("/skiff/faults?account={}", self.id), "")["counters"].clone()
    }

    pub fn reset_faults(&self) {
        http("DELETE", &format!("/skiff/faults?account={}", self.id), "");
    }
}

pub fn http(method: &str, path: &str, body: &str) -> serde_json::Value {
    let host = emulator()
        .endpoint
        .trim_start_matches("http://")
        .to_string();
    let mut s = std::net::TcpStream::connect(host.as_str()).expect("connect to the emulator");
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, json) = out.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "{head}\n{json}"
    );
    serde_json::from_str(json).expect("JSON from /skiff/faults")
}
